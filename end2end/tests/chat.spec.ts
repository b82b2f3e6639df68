import { expect, join, open, roomResources, test, twoInRoom } from './helpers';

// CONTRACT.md, "Meeting essentials": `chat-button` opens `chat-panel`;
// `chat-input`, `chat-send`; each message is a `chat-message` with the
// sender's `data-participant-id`. Plain text, at most 2 000 characters. A
// room's messages are deleted from the live store and the database when
// the room closes.
test('chat: delivered escaped, refused when too long, shown to a late joiner, gone with the room', async ({
  newPage,
  request,
}) => {
  const ada = await newPage();
  const bob = await newPage();
  const { code, a, b } = await twoInRoom(ada, bob);

  // Markup typed into the chat is text; Shift+Enter is a new line, Enter sends.
  const markup = '<img src=x onerror="window.__xss = 1"> & <b>bold</b>';
  await ada.getByTestId('chat-button').click();
  await expect(ada.getByTestId('chat-panel')).toBeVisible();
  const input = ada.getByTestId('chat-input');
  await expect(input).toBeFocused();
  await input.pressSequentially(markup);
  await input.press('Shift+Enter');
  await input.pressSequentially('second line');
  await input.press('Enter');
  const adaMessages = ada.getByTestId('chat-message');
  await expect(adaMessages).toHaveCount(1);
  await expect(input).toHaveValue('');
  await expect(adaMessages.first()).toHaveAttribute('data-participant-id', a.participant_id);
  await expect(adaMessages.first().getByTestId('chat-text')).toHaveText(`${markup}\nsecond line`);

  // Bob, with his chat closed, sees the unread count; opening reads it.
  await expect(bob.getByTestId('chat-unread')).toHaveText('1');
  await bob.getByTestId('chat-button').click();
  await expect(bob.getByTestId('chat-unread')).toHaveCount(0);
  const toBob = bob.getByTestId('chat-message');
  await expect(toBob).toHaveCount(1);
  await expect(toBob.first()).toHaveAttribute('data-participant-id', a.participant_id);
  await expect(toBob.first().getByTestId('chat-name')).toHaveText('Ada');
  await expect(toBob.first().getByTestId('chat-time')).toHaveText(/^\d{2}:\d{2}$/);
  await expect(toBob.first().getByTestId('chat-text')).toHaveText(`${markup}\nsecond line`);
  expect(await bob.locator('[data-testid="chat-panel"] img, [data-testid="chat-panel"] b').count()).toBe(0);
  expect(await bob.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();

  // Too long: a clear error, the text stays in the box, nothing is sent.
  const long = 'x'.repeat(2001);
  await bob.getByTestId('chat-input').fill(long);
  await bob.getByTestId('chat-send').click();
  await expect(bob.getByTestId('chat-error')).toContainText('at most 2 000 characters');
  await expect(bob.getByTestId('chat-input')).toHaveValue(long);
  await bob.getByTestId('chat-input').fill('Hi Ada');
  await expect(bob.getByTestId('chat-error')).toHaveText('');
  await bob.getByTestId('chat-send').click();
  // The next message arrives: the long one never did.
  await expect(adaMessages).toHaveCount(2);
  await expect(adaMessages.nth(1)).toHaveAttribute('data-participant-id', b.participant_id);
  await expect(adaMessages.nth(1).getByTestId('chat-text')).toHaveText('Hi Ada');

  // Somebody who joins later sees what was said, in order.
  const cy = await newPage();
  await open(cy, `/r/${code}`);
  await join(cy, 'Cy');
  await cy.getByTestId('chat-button').click();
  const toCy = cy.getByTestId('chat-message');
  await expect(toCy).toHaveCount(2);
  await expect(toCy.nth(0)).toHaveAttribute('data-participant-id', a.participant_id);
  await expect(toCy.nth(1)).toHaveAttribute('data-participant-id', b.participant_id);
  const kept = (await roomResources(request, code)).room;
  expect([kept.chat_store, kept.chat_db]).toEqual([2, 2]);

  // The host ends the meeting: the room closes and nothing said in it is left.
  await ada.getByTestId('end-meeting').click();
  await ada.getByTestId('confirm-yes').click();
  await expect(cy.getByTestId('prejoin')).toBeVisible();
  await expect.poll(async () => (await roomResources(request, code)).room.ended).toBe(true);
  const after = (await roomResources(request, code)).room;
  expect([after.chat_store, after.chat_db, after.store_keys]).toEqual([0, 0, 0]);
});
