// Types for the plexus Node.js addon (index.js).
import type { Server } from 'http';

/**
 * Options: the plexus CLI's options (`plexus --help`), by flag name ('data-dir') or in
 * camelCase (dataDir). They act like a --config file: PLEXUS_* environment variables
 * override them. `listen` is ignored: plexus serves the socket of the server given.
 */
export interface Options {
  /** Worker threads (0 = one per CPU). */
  workers?: number;
  /** Static files (default: the bundled demo page and browser SDK). */
  static?: string;
  staticDir?: string;
  /** SQLite database directory (default ./var, relative to the working directory). */
  'data-dir'?: string;
  dataDir?: string;
  'allow-anonymous'?: boolean;
  allowAnonymous?: boolean;
  'jwt-secret'?: string;
  jwtSecret?: string;
  'api-key'?: string;
  apiKey?: string;
  durability?: 'normal' | 'full';
  'log-level'?: 'debug' | 'info' | 'warn' | 'error' | 'off';
  logLevel?: 'debug' | 'info' | 'warn' | 'error' | 'off';
  'access-log'?: 'off' | 'text' | 'json';
  accessLog?: 'off' | 'text' | 'json';
  /** Install SIGTERM/SIGINT handlers that stop plexus gracefully, then exit (default true). */
  handleSignals?: boolean;
  /** Any other CLI option: sizes and durations as strings ('64KiB', '10s'). */
  [option: string]: string | number | boolean | string[] | undefined;
}

export interface Running {
  /** The listeners plexus serves ("fd:N": the socket taken from Node). */
  listeners: string[];
  /** Worker threads started. */
  workers: number;
  /** What server.address() said before Node's server was closed. */
  address: string | { address: string; family: string; port: number } | null;
}

export interface Ack {
  /** The message's offset in its channel. */
  offset: number;
  /** The channel's epoch (offsets are meaningful within one epoch). */
  epoch: string;
}

/**
 * Serve plexus on `server`'s listening socket (a port, a path, or Passenger's socket):
 * takes the socket inside the server's 'listening' event, closes Node's server (the
 * socket stays open, a Unix socket keeps its path) and starts plexus's threads.
 * Rejects with an Error whose message names a bad option (exitCode 2).
 */
export function listen(server: Server, options?: Options): Promise<Running>;
/** Publish `data` (any JSON value) on `channel`; resolves once durable. */
export function publish(channel: string, data: unknown): Promise<Ack>;
/** Stop gracefully (in-flight work gets --shutdown-timeout); resolves when stopped. */
export function stop(): Promise<void>;
/** 'idle' | 'running' | 'stopping' | 'stopped' */
export function state(): 'idle' | 'running' | 'stopping' | 'stopped';
/** Load another build of the addon (one with your own C routes: plexus-build --out FILE api.c). */
export function use(addonFile: string): typeof import('./index');
