import { defineConfig } from '@playwright/test';
import base from './playwright.config';

// The exit benchmark (scripts/bench-exits.sh): a measurement, not a test, so it
// lives outside the suite's testDir and only runs when asked for.
//
// No Playwright tracing here (the suite keeps traces of failures): with a trace
// running, every action first snapshots the page's DOM, a screencast encodes
// the pages' frames the whole time, and `context.close()` writes the trace
// chunk before it closes anything, all of which lands inside the measured
// exit times (and loads the two cores the server and both browsers share).
export default defineConfig({
  ...base,
  use: { ...base.use, trace: 'off', screenshot: 'off', video: 'off' },
  testDir: './bench',
  testMatch: /.*\.bench\.ts$/,
  timeout: 30 * 60_000,
  outputDir: './test-results/bench',
});
