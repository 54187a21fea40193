import { memoryStore } from '../../src/stores/memory.ts';
import { storeContract } from './contract.ts';

storeContract('memory', { make: () => memoryStore() });
