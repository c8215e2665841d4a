/** Writes the application into `target` (which must not exist, or be empty); returns the files written. */
export function scaffold(options: { target: string; name: string; plinth: string }): string[]
