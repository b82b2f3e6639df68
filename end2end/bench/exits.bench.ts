/**
 * The exit benchmark: for each way of leaving a call, the time from the exit
 * to (a) the leaver's tile gone in another participant's browser and (b) the
 * server holding nothing of the leaver's session any more. Run by
 * scripts/bench-exits.sh (which starts the server and the test namespace);
 * each sample is appended to $BENCH_OUT as one JSON line, and
 * end2end/bench/report.mjs turns them into the table in BENCHMARKS.md.
 *
 * Per run: an observer (Ada) is alone in a room; the leaver (Bob) joins and
 * media flows both ways; node takes t0 = Date.now() just before triggering the
 * exit; Ada's page records, with a MutationObserver, the wall-clock moment
 * Bob's tile first shows `reconnecting` and the moment it is gone
 * (performance.timeOrigin + performance.now(), the same clock); node polls
 * the debug API, one request at a time every ~15 ms, until (1)
 * `/api/debug/sessions/{id}` says live false, no store entries, no database
 * row and a leave reason, and then (2) `/api/debug/resources` is back to the
 * counts taken before Bob joined (sessions, peer connections, tracks,
 * forwarders, WebSockets; the room's participants, pending and database
 * rows). "Last resource" is (2), as seen by the first poll answer
 * that showed it. Each run gives up 25 s after t0 (then "not seen").
 */
import { chromium, type Browser, type BrowserContext, type Page } from '@playwright/test';
import fs from 'node:fs';
import path from 'node:path';
import config from '../playwright.config';
import { createRoom, expect, join, mediaFlowing, open, test, tile, type Joined } from '../tests/helpers';
import { cutNetwork, launchInNetns, NETNS_BASE_URL, restoreNetwork, tileWatch, watchTile } from '../tests/netns';

const BASE_URL = String(config.use?.baseURL);
const RUNS = Number(process.env.BENCH_RUNS ?? 10);
const RUNS_ABRUPT = Number(process.env.BENCH_RUNS_ABRUPT ?? 5);
const OUT = path.resolve(process.env.BENCH_OUT ?? path.join(__dirname, '..', 'test-results', 'bench', 'exits.jsonl'));
const ONLY = process.env.BENCH_PATHS ? process.env.BENCH_PATHS.split(',') : null;
const POLL_MS = 15;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function getJson(route: string) {
  const res = await fetch(new URL(route, BASE_URL));
  if (!res.ok) throw new Error(`${route}: HTTP ${res.status}`);
  return res.json();
}

/** The node-wide and room counts that must come back to where they were before the leaver joined. */
async function counts(code: string) {
  const r = await getJson(`/api/debug/resources?room=${code}`);
  const room = r.rooms[0] ?? {};
  return {
    sessions: r.sessions,
    peer_connections: r.peer_connections,
    tracks: r.tracks,
    forwarders: r.forwarders,
    websockets: r.websockets,
    participants: room.participants,
    pending: room.pending,
    db_participants: room.db_participants,
    // Not the room's store_keys: room-level keys (the active speaker) change
    // on their own; the session's own store entries are checked through
    // /api/debug/sessions.
  };
}
type Counts = Awaited<ReturnType<typeof counts>>;
const sameCounts = (a: Counts, b: Counts) => (Object.keys(a) as (keyof Counts)[]).every((k) => a[k] === b[k]);

/** One participant who is about to leave, and how. */
interface Leaver {
  page: Page;
  joined: Joined;
  exit: () => Promise<unknown>;
  dispose: () => Promise<unknown>;
}

interface ExitPath {
  name: string;
  abrupt: boolean;
  /** Per path (not per run) setup and teardown, e.g. the namespaced browser. */
  before?: () => Promise<void>;
  after?: () => Promise<void>;
  leaver: (browser: Browser, code: string) => Promise<Leaver>;
}

/**
 * Records in the page (wall clock) when the last click reached it (the event's
 * own time stamp, i.e. when the browser dispatched the input) and when it
 * starts its leave request, the `/api/leave` call or the `/api/beacon/leave`
 * beacon: diagnostics that split an exit's time between the harness
 * (Playwright's actionability checks before it clicks), the leaving page and
 * the server.
 */
async function markLeaveRequests(context: BrowserContext) {
  await context.addInitScript(() => {
    const w = window as unknown as { __leaveSentAt?: number; __clickAt?: number };
    window.addEventListener(
      'click',
      (e) => {
        w.__clickAt = performance.timeOrigin + e.timeStamp;
      },
      { capture: true },
    );
    const mark = (url: unknown) => {
      if (w.__leaveSentAt === undefined && /\/api\/(leave|beacon\/leave)(\?|$)/.test(String(url))) {
        w.__leaveSentAt = performance.timeOrigin + performance.now();
      }
    };
    const fetch = window.fetch.bind(window);
    window.fetch = (input: RequestInfo | URL, init?: RequestInit) => {
      mark(input instanceof Request ? input.url : input);
      return fetch(input, init);
    };
    const beacon = navigator.sendBeacon.bind(navigator);
    navigator.sendBeacon = (url: string | URL, data?: BodyInit | null) => {
      mark(url);
      return beacon(url, data);
    };
  });
}

async function enter(context: BrowserContext, code: string) {
  await markLeaveRequests(context);
  const page = await context.newPage();
  await open(page, `/r/${code}`);
  const joined = await join(page, 'Bob');
  return { page, joined };
}

/** A leaver in a fresh context of the suite's browser. */
function inContext(exit: (page: Page, context: BrowserContext) => Promise<unknown>) {
  return async (browser: Browser, code: string): Promise<Leaver> => {
    const context = await browser.newContext({ baseURL: BASE_URL });
    const { page, joined } = await enter(context, code);
    return { page, joined, exit: () => exit(page, context), dispose: () => context.close() };
  };
}

let netnsBrowser: Browser | undefined;

const PATHS: ExitPath[] = [
  { name: 'leave button', abrupt: false, leaver: inContext((page) => page.getByTestId('leave-button').click()) },
  { name: 'tab close', abrupt: false, leaver: inContext((page) => page.close({ runBeforeUnload: true })) },
  { name: 'window close', abrupt: false, leaver: inContext((_page, context) => context.close()) },
  { name: 'refresh', abrupt: false, leaver: inContext((page) => page.reload()) },
  { name: 'in-app navigation', abrupt: false, leaver: inContext((page) => page.getByTestId('home-link').click()) },
  { name: 'another site', abrupt: false, leaver: inContext((page) => page.goto('about:blank')) },
  {
    name: 'network cut',
    abrupt: true,
    before: async () => {
      netnsBrowser = await launchInNetns();
    },
    after: async () => {
      await restoreNetwork();
      await netnsBrowser?.close();
      netnsBrowser = undefined;
    },
    leaver: async (_browser, code) => {
      const context = await netnsBrowser!.newContext({ baseURL: NETNS_BASE_URL });
      const { page, joined } = await enter(context, code);
      return {
        page,
        joined,
        exit: () => cutNetwork(),
        dispose: async () => {
          await restoreNetwork();
          await context.close();
        },
      };
    },
  },
  {
    name: 'browser killed',
    abrupt: true,
    leaver: async (_browser, code) => {
      const server = await chromium.launchServer({ ...config.use?.launchOptions, headless: true });
      const own = await chromium.connect(server.wsEndpoint());
      const { page, joined } = await enter(await own.newContext({ baseURL: BASE_URL }), code);
      return {
        page,
        joined,
        // SIGKILL to the browser's process group, as exits.spec.ts does.
        exit: async () => {
          const pid = server.process().pid;
          if (pid) process.kill(-pid, 'SIGKILL');
          else await server.kill();
        },
        dispose: async () => {
          await server.kill().catch(() => undefined);
        },
      };
    },
  },
];

interface Sample {
  path: string;
  abrupt: boolean;
  run: number;
  tileGoneMs: number | null;
  reconnectingMs: number | null;
  sessionReleasedMs: number | null;
  countsBackMs: number | null;
  lastResourceMs: number | null;
  leaveSentMs: number | null;
  /** When the exit's click reached the page (Leave button, in-app navigation). */
  clickMs: number | null;
  /** From that click to the tile gone. */
  tileAfterClickMs: number | null;
  leaveReason: string | null;
  /** What was left when a run gave up. */
  leftover: string | null;
  /** The session's states as the polls saw them change (ms after t0). */
  trace: { ms: number; state: string }[];
  at: string;
}

/**
 * Polls the debug API from t0 until the session is released, then until the
 * counts are back to the baseline (or the deadline). One request at a time,
 * so the polling itself loads the server as little as it can.
 */
async function serverReleased(session: string, code: string, baseline: Counts, t0: number, deadline: number) {
  let sessionAt: number | null = null;
  let countsAt: number | null = null;
  let reason: string | null = null;
  let lastSession: unknown = null;
  let lastCounts: Counts | null = null;
  const trace: { ms: number; state: string }[] = [];
  while (Date.now() < deadline && (sessionAt === null || countsAt === null)) {
    const started = Date.now();
    if (sessionAt === null) {
      const s = await getJson(`/api/debug/sessions/${session}`);
      lastSession = s;
      const state = `live=${s.live} store=${s.store_entries.length} db_row=${s.db_row} reason=${s.leave_reason}`;
      if (trace.length === 0 || trace[trace.length - 1].state !== state) trace.push({ ms: Date.now() - t0, state });
      if (!s.live && s.store_entries.length === 0 && !s.db_row && s.leave_reason) {
        sessionAt = Date.now() - t0;
        reason = s.leave_reason;
      }
    }
    if (sessionAt !== null) {
      lastCounts = await counts(code);
      if (sameCounts(lastCounts, baseline)) countsAt = Date.now() - t0;
    }
    await sleep(Math.max(0, POLL_MS - (Date.now() - started)));
  }
  // What was still there when the run gave up (for the report's notes).
  let leftover: string | null = null;
  if (sessionAt === null) leftover = `session: ${JSON.stringify(lastSession)}`;
  else if (countsAt === null && lastCounts) {
    const diff = (Object.keys(baseline) as (keyof Counts)[])
      .filter((k) => lastCounts![k] !== baseline[k])
      .map((k) => `${k} ${baseline[k]}→${lastCounts![k]}`);
    leftover = `counts: ${diff.join(', ')}`;
  }
  return { sessionAt, countsAt, reason, leftover, trace };
}

/**
 * The counts with the observer alone and fully set up (its peer connection
 * and its two published tracks exist), once they hold still: equal twice,
 * 500 ms apart.
 */
async function settledCounts(code: string): Promise<Counts> {
  let previous = await counts(code);
  for (let i = 0; i < 60; i++) {
    await sleep(500);
    const now = await counts(code);
    const ready = now.participants === 1 && now.peer_connections >= 1 && now.tracks >= 2;
    if (ready && sameCounts(now, previous)) return now;
    previous = now;
  }
  throw new Error(`the counts did not settle: ${JSON.stringify(previous)}`);
}

for (const exitPath of PATHS) {
  test(exitPath.name, async ({ browser }) => {
    test.skip(ONLY !== null && !ONLY.includes(exitPath.name), 'not in BENCH_PATHS');
    const runs = exitPath.abrupt ? RUNS_ABRUPT : RUNS;
    fs.mkdirSync(path.dirname(OUT), { recursive: true });
    await exitPath.before?.();
    try {
      const observerContext = await browser.newContext({ baseURL: BASE_URL });
      const ada = await observerContext.newPage();
      const code = await createRoom(ada, 'Ada');
      const a = await join(ada);

      for (let run = 1; run <= runs; run++) {
        const baseline = await settledCounts(code);
        const bob = await exitPath.leaver(browser, code);
        const id = bob.joined.participant_id;
        await expect(tile(ada, id)).toHaveAttribute('data-state', 'connected');
        await expect.poll(async () => mediaFlowing(ada, id), { timeout: 20_000 }).toEqual({ frames: true, audio: true });
        await expect
          .poll(async () => mediaFlowing(bob.page, a.participant_id), { timeout: 20_000 })
          .toEqual({ frames: true, audio: true });
        await watchTile(ada, id);
        await sleep(200); // settle: nothing else in flight when the clock starts

        const t0 = Date.now();
        const exiting = bob.exit().catch((e) => e);
        const deadline = t0 + 25_000;
        const released = serverReleased(bob.joined.session_id, code, baseline, t0, deadline);
        let seen = await tileWatch(ada, id);
        while (seen.goneAt === null && Date.now() < deadline) {
          await sleep(20);
          seen = await tileWatch(ada, id);
        }
        const server = await released;
        await exiting;
        // When the leaving page started its leave request (see markLeaveRequests);
        // readable only where the same document survived the exit.
        const marks = await Promise.race([
          bob.page
            .evaluate(() => {
              const w = window as unknown as { __leaveSentAt?: number; __clickAt?: number };
              return { leaveSentAt: w.__leaveSentAt ?? null, clickAt: w.__clickAt ?? null };
            })
            .catch(() => null),
          sleep(2_000).then(() => null),
        ]);
        const leaveSentAt = marks?.leaveSentAt ?? null;
        // The join's click is earlier than t0: only the exit's own click counts.
        const clickAt = marks?.clickAt != null && marks.clickAt >= t0 - 5 ? marks.clickAt : null;
        const sample: Sample = {
          path: exitPath.name,
          abrupt: exitPath.abrupt,
          run,
          tileGoneMs: seen.goneAt === null ? null : Math.round(seen.goneAt - t0),
          reconnectingMs: seen.reconnectingAt === null ? null : Math.round(seen.reconnectingAt - t0),
          sessionReleasedMs: server.sessionAt,
          countsBackMs: server.countsAt,
          lastResourceMs:
            server.sessionAt === null || server.countsAt === null ? null : Math.max(server.sessionAt, server.countsAt),
          leaveSentMs: leaveSentAt === null ? null : Math.round(leaveSentAt - t0),
          clickMs: clickAt === null ? null : Math.round(clickAt - t0),
          tileAfterClickMs: clickAt === null || seen.goneAt === null ? null : Math.round(seen.goneAt - clickAt),
          leaveReason: server.reason,
          leftover: server.leftover,
          trace: server.trace,
          at: new Date(t0).toISOString(),
        };
        fs.appendFileSync(OUT, `${JSON.stringify(sample)}\n`);
        console.log(
          `${exitPath.name} #${run}: click in page ${sample.clickMs} ms, leave sent ${sample.leaveSentMs} ms, tile gone ${sample.tileGoneMs} ms, reconnecting ${sample.reconnectingMs} ms, ` +
            `session released ${sample.sessionReleasedMs} ms, counts back ${sample.countsBackMs} ms (${sample.leaveReason})` +
            (sample.leftover ? `; left after 25 s: ${sample.leftover}` : ''),
        );
        await bob.dispose().catch(() => undefined);
      }
      await observerContext.close();
    } finally {
      await exitPath.after?.();
    }
  });
}
