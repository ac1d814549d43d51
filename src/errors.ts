/** A problem with the user's input (a file, a config value): reported as one line, without a stack trace. */
export class UserError extends Error {
  constructor(message: string) {
    // One line: a message may quote a file's text (JSON parse errors do), line breaks included.
    super(message.replace(/\s*\n\s*/g, ' '));
    this.name = 'UserError';
  }
}

/** `UserError` naming the file: "<file>: <problem>". */
export function fileError(file: string, problem: string): UserError {
  return new UserError(`${file}: ${problem}`);
}
