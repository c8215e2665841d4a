/** Cache keys of credential lookups, shared by the services that fill them and those that drop them. */
export const sessionCacheKey = (hash: string) => `session:${hash}`
export const tokenCacheKey = (hash: string) => `token:${hash}`
