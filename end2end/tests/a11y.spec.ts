import AxeBuilder from '@axe-core/playwright';
import type { Locator, Page, TestInfo } from '@playwright/test';
import { createRoom, expect, join, open, test, tile } from './helpers';

/** axe-core over the page as it is now: no serious or critical violation. */
async function noSeriousViolations(page: Page, what: string) {
  const results = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']).analyze();
  const bad = results.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  expect(bad, `${what}: axe-core violations`).toEqual([]);
  // A positive signal that axe looked at something.
  expect(results.passes.length, `${what}: axe-core checked rules`).toBeGreaterThan(10);
}

async function box(locator: Locator) {
  const b = await locator.boundingBox();
  expect(b, 'the element is laid out').not.toBeNull();
  return b!;
}

/** The two elements' boxes do not intersect. */
async function apart(a: Locator, b: Locator, what: string) {
  const [x, y] = [await box(a), await box(b)];
  const overlap =
    x.x < y.x + y.width && y.x < x.x + x.width && x.y < y.y + y.height && y.y < x.y + x.height;
  expect(overlap, `${what}: ${JSON.stringify(x)} overlaps ${JSON.stringify(y)}`).toBe(false);
}

async function screenshot(page: Page, info: TestInfo, name: string) {
  await info.attach(name, { body: await page.screenshot({ fullPage: true }), contentType: 'image/png' });
}

// Item 8 of "Meeting essentials": axe-core over the lobby, the pre-join
// screen and the call, at 1280×720 and 390×844, and nothing on a tile or
// the control bar hidden under anything else.
test('lobby, pre-join and call pass axe-core; nothing overlaps at desktop and phone sizes', async ({
  newPage,
}, info) => {
  const ada = await newPage();
  const bob = await newPage();
  await ada.setViewportSize({ width: 1280, height: 720 });
  await open(ada, '/');
  await noSeriousViolations(ada, 'lobby');
  const code = await createRoom(ada, 'Ada');
  await expect(ada.getByTestId('prejoin')).toBeVisible();
  await noSeriousViolations(ada, 'pre-join');
  const a = await join(ada);
  // Alone in the call: the way to invite somebody is right there.
  await expect(ada.getByTestId('alone-invite')).toBeVisible();
  await open(bob, `/r/${code}`);
  const b = await join(bob, 'Bob with a rather long display name');
  await expect(ada.getByTestId('alone-invite')).toHaveCount(0);
  await bob.getByTestId('raise-hand').click();
  const bobsTile = tile(ada, b.participant_id);
  await expect(bobsTile.locator('.hand-badge')).toBeVisible();
  await expect(ada.locator('h1')).toHaveCount(1);

  for (const [width, height] of [
    [1280, 720],
    [390, 844],
  ]) {
    await ada.setViewportSize({ width, height });
    const size = `${width}×${height}`;
    await noSeriousViolations(ada, `call at ${size}`);
    // On a tile: the hand, the host's buttons, the name and the pin apart.
    const actions = bobsTile.locator('.tile-actions');
    await expect(actions).toBeVisible();
    await apart(bobsTile.locator('.hand-badge'), actions, `hand and host buttons at ${size}`);
    await apart(bobsTile.locator('.tile-name'), bobsTile.getByTestId('pin'), `name and pin at ${size}`);
    await apart(bobsTile.locator('.hand-badge'), bobsTile.getByTestId('pin'), `hand and pin at ${size}`);
    // "Reconnecting…" (shown while Bob's connection is silent) clear of the host's buttons.
    const badge = bobsTile.locator('.tile-badge');
    await badge.evaluate((el) => (el.textContent = 'Reconnecting…'));
    await apart(badge, actions, `reconnecting badge and host buttons at ${size}`);
    await badge.evaluate((el) => (el.textContent = ''));
    // A notice does not cover the control bar, and clicks go through it.
    await ada.getByTestId('copy-link').click();
    const toast = ada.locator('.toast').last();
    await expect(toast).toBeVisible();
    await apart(toast, ada.getByTestId('leave-button'), `notice and Leave at ${size}`);
    await apart(toast, ada.locator('footer.controls'), `notice and the control bar at ${size}`);
    await screenshot(ada, info, `call-${size}`);
  }
  expect(a.role).toBe('admin');

  // The dark theme (the system's choice) passes too, contrast included.
  await ada.setViewportSize({ width: 1280, height: 720 });
  await ada.emulateMedia({ colorScheme: 'dark' });
  expect(await ada.evaluate(() => getComputedStyle(document.body).backgroundColor)).toBe('rgb(15, 20, 26)');
  await noSeriousViolations(ada, 'call, dark');
  await screenshot(ada, info, 'call-dark');

  // Shortcuts, as the tooltips say: Ctrl+D the microphone, Ctrl+E the camera.
  await expect(ada.getByTestId('mute-audio')).toHaveAttribute('title', /Ctrl\+D/);
  await ada.keyboard.press('Control+d');
  await expect(ada.getByTestId('mute-audio')).toHaveAttribute('aria-pressed', 'true');
  await ada.keyboard.press('Control+e');
  await expect(ada.getByTestId('mute-video')).toHaveAttribute('aria-pressed', 'true');
  await ada.keyboard.press('Control+d');
  await expect(ada.getByTestId('mute-audio')).toHaveAttribute('aria-pressed', 'false');
});
