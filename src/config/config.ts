// The configuration file: `key = value` lines, `#` comments, every key optional. This module is
// the one entry point the rest of the daemon imports; the parts live by concern:
//   schema.ts  the Config interface and the key table (names, types, defaults, documentation)
//   values.ts  the value types: how the text after "=" becomes a typed value
//   rules.ts   the rules between keys
//   load.ts    reading the file, the defaults, and ConfigError
export { packageRoot } from './package-root.js';
export { describeConfigKeys, type Config, type LogLevel } from './schema.js';
export { ConfigError, defaultConfig, loadConfig, parseConfig } from './load.js';
