import { defineConfig } from '@playwright/test';
import base from './playwright.config';

// The exit benchmark (scripts/bench-exits.sh): a measurement, not a test, so it
// lives outside the suite's testDir and only runs when asked for.
export default defineConfig({
  ...base,
  testDir: './bench',
  testMatch: /.*\.bench\.ts$/,
  timeout: 30 * 60_000,
  outputDir: './test-results/bench',
});
