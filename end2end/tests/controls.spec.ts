import { type Page } from '@playwright/test';
import {
  createRoom,
  expect,
  join,
  microphonesEnabled,
  open,
  recordMedia,
  roomResources,
  test,
  tile,
} from './helpers';

/** The `data-testid` of the focused element (or its tag when it has none). */
function focused(page: Page): Promise<string> {
  return page.evaluate(() => {
    const el = document.activeElement;
    return el?.getAttribute('data-testid') ?? el?.tagName.toLowerCase() ?? 'none';
  });
}

/**
 * Presses Tab until the control with `testId` has the focus, and checks it
 * shows a focus ring. Fails if it cannot be reached by Tab from where the
 * focus is (within `limit` presses).
 */
async function tabTo(page: Page, testId: string, limit = 40): Promise<void> {
  const seen: string[] = [];
  for (let i = 0; i < limit; i++) {
    await page.keyboard.press('Tab');
    const now = await focused(page);
    seen.push(now);
    if (now === testId) {
      const outline = await page.evaluate(() => getComputedStyle(document.activeElement!).outlineStyle);
      expect(outline, `${testId} shows where the focus is`).not.toBe('none');
      return;
    }
  }
  throw new Error(`${testId} not reached by Tab; focus went through: ${seen.join(', ')}`);
}

test('a whole meeting with the keyboard alone', async ({ newPage, request: api }) => {
  const ada = await newPage();
  const bob = await newPage();

  // Lobby: name, a setting, create, all by keyboard.
  await open(ada, '/');
  await tabTo(ada, 'display-name');
  await ada.keyboard.type('Ada');
  await tabTo(ada, 'room-private');
  await tabTo(ada, 'room-host-unmutes');
  await ada.keyboard.press('Space');
  await expect(ada.getByTestId('room-host-unmutes')).toBeChecked();
  await expect(ada.getByTestId('room-private')).not.toBeChecked();
  await tabTo(ada, 'create-room');
  await ada.keyboard.press('Enter');
  await ada.waitForURL(/\/r\/[a-z]{3}-[a-z]{4}-[a-z]{3}$/);
  await expect(ada.locator('body[data-hydrated="true"]')).toHaveCount(1);
  const code = new URL(ada.url()).pathname.split('/').pop()!;

  // Pre-join: the name is remembered; Join by keyboard.
  await expect(ada.getByTestId('display-name')).toHaveValue('Ada');
  await tabTo(ada, 'join-button');
  await ada.keyboard.press('Enter');
  await expect(ada.getByTestId('call')).toBeVisible();

  await open(bob, `/r/${code}`);
  const b = await join(bob, 'Bob');
  await expect(tile(ada, b.participant_id)).toBeVisible();

  // Every control of the bar is reached by Tab and works with Space or Enter.
  await tabTo(ada, 'mute-audio');
  await ada.keyboard.press('Space');
  await expect(ada.getByTestId('mute-audio')).toHaveAttribute('aria-pressed', 'true');
  await tabTo(ada, 'mute-video');
  await ada.keyboard.press('Enter');
  await expect(ada.getByTestId('mute-video')).toHaveAttribute('aria-pressed', 'true');
  await tabTo(ada, 'raise-hand');
  await ada.keyboard.press('Space');
  await expect(ada.getByTestId('raise-hand')).toHaveAttribute('aria-pressed', 'true');
  // Peers see all three.
  const adaId = await ada.locator('[data-testid="participant-tile"][data-self="true"]').getAttribute('data-participant-id');
  await expect(tile(bob, adaId!)).toHaveAttribute('data-hand', 'true');
  await expect(tile(bob, adaId!)).toContainText('muted');

  // The admin's tile actions: mute Bob from his tile (before the bar in the tab order).
  await ada.getByTestId('mute-audio').focus();
  const backTo = async (testId: string) => {
    for (let i = 0; i < 40; i++) {
      await ada.keyboard.press('Shift+Tab');
      if ((await focused(ada)) === testId) return;
    }
    throw new Error(`${testId} was not reached by Shift+Tab`);
  };
  await backTo('mute-participant');
  await ada.keyboard.press('Enter');
  await expect(bob.getByTestId('mute-audio')).toHaveAttribute('aria-pressed', 'true');

  // On a phone the people panel is behind a button: opening it moves focus
  // into it, its controls are reachable, Escape closes it and gives focus back.
  await ada.setViewportSize({ width: 390, height: 844 });
  await expect(ada.getByTestId('participant-panel')).toBeHidden();
  await tabTo(ada, 'participants-button');
  await ada.keyboard.press('Enter');
  await expect(ada.getByTestId('participants-button')).toHaveAttribute('aria-expanded', 'true');
  await expect(ada.getByTestId('participant-panel')).toBeVisible();
  await expect
    .poll(() => ada.evaluate(() => document.activeElement?.closest('aside')?.getAttribute('data-testid')))
    .toBe('participant-panel');
  await tabTo(ada, 'make-admin');
  await ada.keyboard.press('Escape');
  await expect(ada.getByTestId('participants-button')).toHaveAttribute('aria-expanded', 'false');
  await expect(ada.getByTestId('participant-panel')).toBeHidden();
  expect(await focused(ada)).toBe('participants-button');
  await ada.setViewportSize({ width: 1280, height: 720 });

  // Leave by keyboard: back to the lobby, nothing of Ada left.
  await tabTo(ada, 'leave-button');
  await ada.keyboard.press('Enter');
  await expect(ada.getByTestId('create-room')).toBeVisible();
  await expect(ada.locator('[data-testid="participant-tile"]')).toHaveCount(0);
  await expect(tile(bob, adaId!)).toHaveCount(0);
  await expect.poll(async () => (await roomResources(api, code)).room).toMatchObject({ participants: 1, db_participants: 1 });
});

test('where the host unmutes: a muted person waits for the host', async ({ newContext, newPage }) => {
  const ada = await newPage();
  const bobContext = await newContext();
  await recordMedia(bobContext);
  const bob = await bobContext.newPage();
  const code = await createRoom(ada, 'Ada', { hostUnmutes: true });
  await join(ada);
  await open(bob, `/r/${code}`);
  const b = await join(bob, 'Bob');
  const micEnabled = () => microphonesEnabled(bob);

  await tile(ada, b.participant_id).getByTestId('mute-participant').click();
  const mic = bob.getByTestId('mute-audio');
  await expect(mic).toHaveAttribute('aria-pressed', 'true');
  await expect(mic).toHaveAttribute('aria-disabled', 'true');
  await expect(mic).toHaveText('Muted by host');
  await expect(bob.locator('.toast').last()).toContainText('Raise your hand');
  await expect.poll(micEnabled).toEqual([false]);
  // Trying anyway (the button only looks disabled: it still explains why) changes nothing.
  await mic.click({ force: true });
  await expect(mic).toHaveAttribute('aria-pressed', 'true');
  await expect.poll(micEnabled).toEqual([false]);
  await expect(tile(ada, b.participant_id)).toContainText('muted');

  // The host lets Bob speak: he is still muted until he unmutes himself.
  await tile(ada, b.participant_id).getByTestId('allow-unmute').click();
  await expect(mic).toHaveAttribute('aria-disabled', 'false');
  await expect(mic).toHaveText('Unmute');
  await expect(bob.locator('.toast').last()).toContainText('lets you unmute');
  await mic.click();
  await expect(mic).toHaveAttribute('aria-pressed', 'false');
  await expect.poll(micEnabled).toEqual([true]);
  await expect(tile(ada, b.participant_id)).not.toContainText('muted');
});
