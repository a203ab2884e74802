/**
 * Compile-time checks, no run-time code: each public options type, written by hand with its
 * TSDoc, accepts exactly what its zod schema accepts (`z.input`), so the two cannot drift. A
 * field added to one and not the other fails `tsc`.
 *
 * @packageDocumentation
 */
import type { z } from 'zod';
import type { ClusterOptions } from './cluster/options.js';
import type { clusterOptionsSchema } from './cluster/options.js';
import type { InstanceManagerOptions } from './manager/types.js';
import type { optionsSchema as managerOptionsSchema } from './manager/options.js';
import type { RuntimeOptions, StartInstanceOptions } from './runtime/options.js';
import type { runtimeOptionsSchema, startInstanceSchema } from './runtime/options.js';
import type { SupervisorOptions } from './supervisor/supervisor-types.js';
import type { optionsSchema as supervisorOptionsSchema } from './supervisor/supervisor-core.js';
import type { WorkerHostOptions } from './worker/host-types.js';
import type { workerHostOptionsSchema } from './worker/schemas.js';

/**
 * `true` when `A` and `B` accept the same values (each assignable to the other), leaving out the
 * keys `K`: fields whose schema is looser on purpose because another check owns their shape (the
 * piscina options, checked key by key; a per-instance `restart`, parsed by the restart schema; a
 * supervisor's `children`, parsed one child spec at a time; `transferList`, given to Node as is).
 * Their keys must still exist on both sides.
 */
type SameShape<A, B, K extends keyof A & keyof B = never> = [Omit<A, K>] extends [Omit<B, K>] ? ([Omit<B, K>] extends [Omit<A, K>] ? true : false) : false;

/** Fails to compile unless `T` is `true`. */
type Check<T extends true> = T;

export type OptionsMatchSchemas = [
  Check<SameShape<RuntimeOptions, z.input<typeof runtimeOptionsSchema>, 'pool'>>,
  Check<SameShape<StartInstanceOptions, z.input<typeof startInstanceSchema>, 'restart'>>,
  Check<SameShape<ClusterOptions, z.input<typeof clusterOptionsSchema>>>,
  Check<SameShape<InstanceManagerOptions, z.input<typeof managerOptionsSchema>>>,
  Check<SameShape<SupervisorOptions, z.input<typeof supervisorOptionsSchema>, 'children'>>,
  Check<SameShape<WorkerHostOptions, z.input<typeof workerHostOptionsSchema>, 'transferList'>>,
];
