// winston logger; to DIR/sheep.log by default, stderr in the foreground too.
import winston from 'winston';
import * as path from 'node:path';

export const LOG_LEVELS = ['emerg', 'alert', 'crit', 'err', 'warning', 'notice', 'info', 'debug'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

// winston's syslog level names use 'error' and 'warning'; map ours onto them.
const toWinston = (l: LogLevel): string => (l === 'err' ? 'error' : l);

let logger: winston.Logger = winston.createLogger({ silent: true });
let currentLevel: LogLevel = 'info';

export function initLogger(opts: { dir: string; level: LogLevel; foreground: boolean; file?: boolean }): void {
  const transports: winston.transport[] = [];
  if (opts.file !== false) transports.push(new winston.transports.File({ filename: path.join(opts.dir, 'sheep.log') }));
  if (opts.foreground) transports.push(new winston.transports.Console({ stderrLevels: [...LOG_LEVELS].map(toWinston) }));
  currentLevel = opts.level;
  logger = winston.createLogger({
    levels: winston.config.syslog.levels,
    level: toWinston(opts.level),
    format: winston.format.combine(
      winston.format.timestamp({ format: 'MMM DD HH:mm:ss.SSS' }),
      winston.format.printf((i) => `${i.timestamp} ${String(i.level).toUpperCase()} ${i.message}`),
    ),
    transports,
  });
}

export function setLogLevel(l: LogLevel): void {
  currentLevel = l;
  logger.level = toWinston(l);
}
export const getLogLevel = (): LogLevel => currentLevel;

export const log = {
  err: (m: string) => logger.log('error', m),
  warn: (m: string) => logger.log('warning', m),
  notice: (m: string) => logger.log('notice', m),
  info: (m: string) => logger.log('info', m),
  debug: (m: string) => logger.log('debug', m),
};

export function closeLogger(): Promise<void> {
  return new Promise((resolve) => {
    logger.on('finish', () => resolve());
    logger.end();
    setTimeout(resolve, 200).unref();
  });
}
