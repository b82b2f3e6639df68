import { defineConfig } from '@playwright/test';

// The server is started by scripts/test.sh (once per deployment) and its
// address handed over in BASE_URL. Chromium is Debian's, never a download.
const BASE_URL = process.env.BASE_URL ?? 'http://127.0.0.1:3000';

// Specs that start their own servers, run once (not per deployment).
const ONCE = ['**/real_networks.spec.ts', '**/several_nodes.spec.ts', '**/bandwidth.spec.ts'];

export default defineConfig({
  testDir: './tests',
  // The real-network, several-node and bandwidth specs start their own
  // servers (HTTPS, coturn, NAT; nodes behind haproxy; shaped links) and run
  // once, on their own (scripts/test.sh sets REAL_NETWORKS=1).
  testIgnore: process.env.REAL_NETWORKS ? [] : ONCE,
  testMatch: process.env.REAL_NETWORKS ? ONCE : ['**/*.spec.ts'],
  timeout: 60_000,
  expect: { timeout: 10_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [['list']],
  outputDir: './test-results',
  use: {
    baseURL: BASE_URL,
    viewport: { width: 1280, height: 720 },
    trace: 'retain-on-failure',
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--use-fake-device-for-media-stream',
        '--use-fake-ui-for-media-stream',
        '--allow-loopback-in-peer-connection',
        '--autoplay-policy=no-user-gesture-required',
        // getDisplayMedia shares the (virtual) screen without asking.
        '--auto-select-desktop-capture-source=Entire screen',
      ],
    },
  },
});
