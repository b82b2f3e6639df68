import { expect, test, tile, twoInRoom } from './helpers';

// The pages run under their Content-Security-Policy (scripts only from this
// origin or with the response's nonce, no framing): the app hydrates, joins
// a call with media and shows the other person's video without a single
// policy violation.
test('a whole call runs under the content security policy', async ({ newContext }) => {
  const pages = [];
  for (let i = 0; i < 2; i++) {
    const context = await newContext();
    await context.addInitScript(() => {
      const seen: string[] = [];
      (window as unknown as { __cspViolations: string[] }).__cspViolations = seen;
      document.addEventListener('securitypolicyviolation', (e) => seen.push(`${e.violatedDirective} ${e.blockedURI}`));
    });
    pages.push(await context.newPage());
  }
  const [ada, bob] = pages;
  const lobby = await ada.request.get('/');
  const policy = lobby.headers()['content-security-policy'];
  expect(policy).toContain("frame-ancestors 'none'");
  expect(policy).toMatch(/script-src 'self' 'nonce-[A-Za-z0-9_-]+'/);
  expect(lobby.headers()['x-frame-options']).toBe('DENY');

  const { a, b } = await twoInRoom(ada, bob);
  for (const [page, other] of [[ada, b.participant_id], [bob, a.participant_id]] as const) {
    const video = tile(page, other).locator('video');
    await expect.poll(() => video.evaluate((v: HTMLVideoElement) => v.currentTime), { timeout: 15_000 }).toBeGreaterThan(0);
  }
  for (const page of pages) {
    const violations = await page.evaluate(() => (window as unknown as { __cspViolations: string[] }).__cspViolations);
    expect(violations).toEqual([]);
  }
});
