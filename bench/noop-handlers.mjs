// Handlers for ours in the benchmark (LAVA_WEBHOOK_HANDLERS): every event is run and does nothing, so what the
// worker costs after the ack is our own machinery (claim, dispatch, complete) and nothing of the handler's.
const noop = () => {};

export const handlers = {
  'customer.created': noop,
  'customer.wallet.balance.updated': noop,
  'customer.deleted': noop,
};
export const onUnknown = noop;
