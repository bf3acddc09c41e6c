// One error type carrying a Sheepdog result code and a sentence.
import { resultMessage } from './constants.js';

export class SheepdogError extends Error {
  constructor(readonly result: number, message?: string) {
    super(message ?? resultMessage(result));
    this.name = 'SheepdogError';
  }
}

/** A transport failure (connect refused, reset, timeout) rather than a result. */
export class ConnectionError extends Error {
  constructor(message: string, readonly code?: string) {
    super(message);
    this.name = 'ConnectionError';
  }
}
