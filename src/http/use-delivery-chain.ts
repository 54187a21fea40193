// A preload (bun --preload, deno --preload, node --import): every receiver this process creates routes deliveries
// through the Hono chain instead of the fast path. For the benchmark's comparison targets and the intake suites'
// second pass only; see docs/architecture.md, "Why deliveries skip Hono's router".
import { setDefaultDeliveryRoute } from '../receiver.ts';
import { deliveryChain } from './delivery-chain.ts';

setDefaultDeliveryRoute(deliveryChain);
