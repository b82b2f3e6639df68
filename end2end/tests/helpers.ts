import { expect, type APIRequestContext, type Page } from '@playwright/test';

/** What the join server function answered. */
export interface Joined {
  session_id: string;
  participant_id: string;
  role: 'admin' | 'member';
  state: 'active' | 'pending';
}

/** Opens a page and waits until the WASM has hydrated it. */
export async function open(page: Page, path: string): Promise<void> {
  await page.goto(path);
  await expect(page.locator('body[data-hydrated="true"]')).toHaveCount(1);
}

/** Creates a room from the lobby; returns its code. */
export async function createRoom(page: Page, name: string, opts: { private?: boolean } = {}): Promise<string> {
  await open(page, '/');
  await page.getByTestId('display-name').fill(name);
  if (opts.private) await page.getByTestId('room-private').check();
  await page.getByTestId('create-room').click();
  await page.waitForURL(/\/r\/[a-z]{3}-[a-z]{4}-[a-z]{3}$/);
  await expect(page.locator('body[data-hydrated="true"]')).toHaveCount(1);
  return new URL(page.url()).pathname.split('/').pop()!;
}

/** Joins from the pre-join screen; returns the server's answer. */
export async function join(page: Page, name?: string): Promise<Joined> {
  await expect(page.getByTestId('prejoin')).toBeVisible();
  if (name !== undefined) await page.getByTestId('display-name').fill(name);
  const answer = page.waitForResponse((r) => r.url().endsWith('/api/join') && r.request().method() === 'POST');
  await page.getByTestId('join-button').click();
  const response = await answer;
  expect(response.status()).toBe(200);
  const joined = (await response.json()) as Joined;
  await expect(page.getByTestId('call')).toBeVisible();
  return joined;
}

/** `/api/debug/resources` for one room. */
export async function roomResources(request: APIRequestContext, code: string) {
  const res = await request.get(`/api/debug/resources?room=${code}`);
  expect(res.status()).toBe(200);
  const body = await res.json();
  return { all: body, room: body.rooms[0] };
}

/** `/api/debug/sessions/{id}`: what is left of one session. */
export async function sessionResources(request: APIRequestContext, session: string) {
  const res = await request.get(`/api/debug/sessions/${session}`);
  expect(res.status()).toBe(200);
  return res.json();
}
