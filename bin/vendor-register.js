// `node --import ./bin/vendor-register.js …`: the vendor bundle for this process (bin/vendor-hooks.js).
// `npm test` runs every test file so, as bin/plinth.js runs the server.
import { fileURLToPath } from 'node:url'
import { useVendorBundle } from './vendor-hooks.js'

useVendorBundle(fileURLToPath(new URL('..', import.meta.url)))
