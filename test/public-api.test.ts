/**
 * The public surface, listed: every runtime value exported by the main entry (`threadvisor`), by
 * the ops entry (`threadvisor/ops`) and by the unstable testing entry (`threadvisor/testing`),
 * sorted. A change to any shows here in review; update the lists on purpose. The main entry stays
 * small (at most 50 values), and every symbol it and the ops entry export, types included,
 * carries TSDoc.
 */
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import * as channel from '../src/channel-api.js';
import * as main from '../src/index.js';
import * as http from '../src/http.js';
import * as ops from '../src/ops.js';
import * as testing from '../src/testing.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const names = (mod: object): string[] => Object.keys(mod).sort();

describe('public API', { timeout: 60_000 }, () => {
  it('the main entry exports these runtime values, and no more than 50', () => {
    expect(names(main)).toEqual([
      'AbortedError',
      'AgentCrashedError',
      'AlreadyPresentError',
      'AlreadyStartedError',
      'BUILTIN_CHANNELS',
      'CLASSIFICATION_TABLE',
      'ChannelError',
      'ChannelInvalidError',
      'ChildRestartingError',
      'ChildRunningError',
      'CorruptCheckpointError',
      'DeliveryFailedError',
      'EVENTS',
      'FileStorage',
      'HibernateFailedError',
      'INSTANCE_EVENTS',
      'INSTANCE_STATUSES',
      'InstanceManager',
      'InstanceNotFoundError',
      'InvalidConfigError',
      'InvalidMessageError',
      'MemoryStorage',
      'NotFoundError',
      'NotOwnerError',
      'NotRunningError',
      'PRESSURE_LEVELS',
      'QueueFullError',
      'REDACT_PATHS',
      'RevisionConflictError',
      'Runtime',
      'StartFailureError',
      'StoppedError',
      'Supervisor',
      'ThawFailedError',
      'ThreadvisorError',
      'TimeoutError',
      'UnavailableError',
      'WorkerExitedError',
      'WorkerHost',
      'checkChannelDefinition',
      'classifyError',
      'defaultLogger',
      'defineChannel',
      'eventChannel',
      'explainClassification',
      'isNormalExit',
      'seededRandom',
      'workerChild',
    ]);
    expect(names(main).length).toBeLessThanOrEqual(50);
  });

  it('threadvisor/testing exports these runtime values, none of them also on the main entry', () => {
    expect(names(testing)).toEqual([
      'CHECKPOINT_VERSION',
      'DEFAULT_FAILURE_CLASS',
      'DEGRADED_CODES',
      'FAILURE_CLASSES',
      'FATAL_CODES',
      'InstanceServer',
      'IntensityWindow',
      'MAX_CAUSE_DEPTH',
      'MAX_REASON_LENGTH',
      'MIN_SECRET_LENGTH',
      'NETWORK_CODES',
      'OutboundQueue',
      'REDACTED',
      'TRANSIENT_CODES',
      'TRANSITIONS',
      'backoffDelay',
      'backoffFloor',
      'canTransition',
      'collectSecrets',
      'errorFacts',
      'findNonJson',
      'instanceSchema',
      'instanceStatusSchema',
      'isFailureClass',
      'isInstanceStatus',
      'parseInstance',
      'redactInstance',
      'renderReason',
      'scrubSecrets',
      'scrubValue',
      'scrubWith',
      'transitionKind',
    ]);
    expect(names(testing).filter((n) => n in main)).toEqual([]);
  });

  it('threadvisor/ops exports these runtime values, none of them also on the main entry', () => {
    expect(names(ops)).toEqual(['serveOps', 'stopOnSignals']);
    expect(names(ops).filter((n) => n in main)).toEqual([]);
  });

  it('threadvisor/channel exports what a channel module needs, each the same value as on the main entry', () => {
    expect(names(channel)).toEqual(['ChannelError', 'ThreadvisorError', 'checkChannelDefinition', 'defineChannel']);
    for (const n of names(channel)) expect((channel as Record<string, unknown>)[n]).toBe((main as Record<string, unknown>)[n]);
  });

  it('threadvisor/http exports these runtime values, none of them also on the main entry', () => {
    expect(names(http)).toEqual(['httpChannel']);
    expect(names(http).filter((n) => n in main)).toEqual([]);
  });

  it.each(['index', 'channel-api', 'ops', 'http'])('every symbol of src/%s.ts, types included, has TSDoc', (file) => {
    const config = ts.getParsedCommandLineOfConfigFile(`${root}tsconfig.json`, {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => {} });
    const entry = `${root}src/${file}.ts`;
    const program = ts.createProgram([entry], { ...config!.options, noEmit: true });
    const checker = program.getTypeChecker();
    const exports = checker.getExportsOfModule(checker.getSymbolAtLocation(program.getSourceFile(entry)!)!);
    const undocumented = exports
      .filter((s) => {
        const target = s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s;
        return ts.displayPartsToString(target.getDocumentationComment(checker)).trim() === '';
      })
      .map((s) => s.name);
    expect(exports.length).toBeGreaterThan(names(file === 'channel-api' ? channel : file === 'ops' ? ops : file === 'http' ? http : main).length); // the types are there too
    expect(undocumented).toEqual([]);
  });
});
