/**
 * Renders README's event table from the event table itself: the names and emitters from `EVENTS`,
 * the diagnostics channel from `channelName`, the payload fields from the payload maps' types and
 * the "when" from each map entry's TSDoc (read with the TypeScript compiler).
 */
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { EVENTS, channelName, type EventEmitterKind } from '../../src/events.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

/** The emitters README lists, with their payload map and the name shown in the table. */
const EMITTERS: ReadonlyArray<readonly [EventEmitterKind, string, string]> = [
  ['runtime', 'RuntimeEvents', '`Runtime`'],
  ['instance', 'InstanceHandleEvents', 'instance handle'],
  ['supervisor', 'SupervisorEvents', '`Supervisor`'],
  ['worker', 'WorkerEvents', '`WorkerHost`'],
  ['manager', 'ManagerEvents', '`InstanceManager`'],
];

/** Field groups shown by one name: every field of the group present → the group's name. */
const GROUPS: ReadonlyArray<readonly [string, readonly string[]]> = [
  ['*instance*', ['instanceId', 'channelType', 'name']],
  ['*agent*', ['manager', 'key', 'incarnation']],
];

/** The declared fields of one payload (`at` included). */
export interface Shape {
  required: string[];
  optional: string[];
  /** Whether it takes any other field too (the caller's meta of `instance:connected`). */
  meta: boolean;
}

interface Row {
  event: string;
  emitters: string[];
  channel: string;
  fields: string;
  when: string;
}

type PayloadMap = { fields: (event: string) => string; when: (event: string) => string; shape: (event: string) => Shape };
let cached: Map<string, PayloadMap> | undefined;

function payloadMaps(): Map<string, PayloadMap> {
  if (cached) return cached;
  const config = ts.getParsedCommandLineOfConfigFile(`${root}tsconfig.json`, {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => {} });
  const entry = `${root}src/events.ts`;
  const program = ts.createProgram([entry], { ...config!.options, noEmit: true });
  const checker = program.getTypeChecker();
  const exports = checker.getExportsOfModule(checker.getSymbolAtLocation(program.getSourceFile(entry)!)!);
  const maps = new Map<string, PayloadMap>();
  for (const [, typeName] of EMITTERS) {
    const symbol = exports.find((s) => s.name === typeName);
    if (!symbol) throw new Error(`src/events.ts exports no ${typeName}`);
    const map = checker.getDeclaredTypeOfSymbol(symbol);
    const entryOf = (event: string): ts.Symbol => {
      const p = checker.getPropertyOfType(map, event);
      if (!p) throw new Error(`${typeName} has no ${event}`);
      return p;
    };
    maps.set(typeName, {
      fields: (event) => {
        const payload = checker.getTypeOfSymbol(entryOf(event));
        const props = checker.getPropertiesOfType(payload).filter((p) => p.name !== 'at');
        let names = props.map((p) => `\`${p.name}${p.flags & ts.SymbolFlags.Optional ? '?' : ''}\``);
        for (const [label, group] of GROUPS) {
          if (group.every((g) => props.some((p) => p.name === g))) names = [label, ...names.filter((n) => !group.includes(n.replace(/[`?]/g, '')))];
        }
        if (checker.getIndexInfosOfType(payload).length > 0) names.push('meta');
        return names.join(', ');
      },
      shape: (event) => {
        const payload = checker.getTypeOfSymbol(entryOf(event));
        const props = checker.getPropertiesOfType(payload);
        const optional = (p: ts.Symbol): boolean => (p.flags & ts.SymbolFlags.Optional) !== 0;
        return {
          required: props.filter((p) => !optional(p)).map((p) => p.name),
          optional: props.filter(optional).map((p) => p.name),
          meta: checker.getIndexInfosOfType(payload).length > 0,
        };
      },
      when: (event) => ts.displayPartsToString(entryOf(event).getDocumentationComment(checker)).replace(/\s+/g, ' ').replace(/\|/g, '\\|').trim(),
    });
  }
  cached = maps;
  return maps;
}

/** The declared payload fields of `event` as `emitter` emits it. */
export function declaredShape(emitter: EventEmitterKind, event: string): Shape {
  const typeName = EMITTERS.find(([e]) => e === emitter)?.[1];
  if (!typeName) throw new Error(`no payload map for ${emitter}`);
  return payloadMaps().get(typeName)!.shape(event);
}

/** The rows of the table, one per event, in the order of `EVENTS`. */
export function eventRows(): Row[] {
  const maps = payloadMaps();
  const rows = new Map<string, Row>();
  for (const [emitter, typeName, label] of EMITTERS) {
    const map = maps.get(typeName)!;
    for (const event of EVENTS[emitter] as readonly string[]) {
      const row = rows.get(event);
      if (row) {
        row.emitters.push(label);
        continue;
      }
      rows.set(event, { event, emitters: [label], channel: channelName(emitter, event), fields: map.fields(event), when: map.when(event) });
    }
  }
  return [...rows.values()];
}

/** The markdown table README carries between its `events-table` markers. */
export function eventsTable(): string {
  const lines = ['| event | emitted on | diagnostics channel | payload (besides `at`) | when |', '|---|---|---|---|---|'];
  for (const r of eventRows()) {
    lines.push(`| \`${r.event}\` | ${r.emitters.join(', ')} | \`${r.channel}\` | ${r.fields} | ${r.when} |`);
  }
  return lines.join('\n');
}
