/**
 * The source of truth for Plinth's layers (docs/architecture.md explains them). `npm run lint` runs
 * it; a new upward import or a circle fails the lint.
 *
 *   shared                      error registry, validation helpers: everyone may import it
 *   config                      the config schema and its loader
 *   infra, observability        adapters to the outside world, logging, metrics, health
 *   core                        contracts only (module, jobs, schedules, audit, events, mail, privacy…)
 *   modules                     feature modules: each talks to the others through core contracts
 *   http                        the Fastify server and its cross-cutting plugins
 *   app                         the composition root: lists modules, wires adapters, lifecycle
 *   cli, main.ts                the `plinth` command
 *   index.ts, testing/          the public API applications import (`plinth`, `plinth/testing`)
 *
 * Each layer imports only the layers listed above it here (and itself).
 */
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'A circle makes two files one unit that cannot be understood, tested or moved alone.',
      from: {},
      to: { circular: true },
    },
    {
      name: 'shared-is-the-bottom',
      severity: 'error',
      comment: 'src/shared is imported by every layer, so it imports none of them.',
      from: { path: '^src/shared/' },
      to: { path: '^src/', pathNot: '^src/shared/' },
    },
    {
      name: 'config-imports-only-shared',
      severity: 'error',
      from: { path: '^src/config/' },
      to: { path: '^src/', pathNot: '^src/(shared|config)/' },
    },
    {
      name: 'infra-and-observability-stay-below-core',
      severity: 'error',
      comment: 'Adapters know nothing of contracts, modules, HTTP or the root.',
      from: { path: '^src/(infra|observability)/' },
      to: { path: '^src/(core|modules|http|app|cli)/|^src/main\\.ts$' },
    },
    {
      name: 'core-holds-contracts-only',
      severity: 'error',
      comment: 'core defines what modules implement; it imports nothing above it.',
      from: { path: '^src/core/' },
      to: { path: '^src/(modules|http|app|cli)/|^src/main\\.ts$' },
    },
    {
      name: 'core-knows-no-web-framework',
      severity: 'error',
      comment:
        'Contracts do not depend on Fastify: a CLI caller or a job is as good a caller as a request. ' +
        'The one exception is the module contract, which names the app a module mounts its routes on.',
      from: { path: '^src/core/', pathNot: '^src/core/module\\.ts$' },
      to: { path: 'node_modules/(fastify|@fastify)/' },
    },
    {
      name: 'modules-stay-below-http',
      severity: 'error',
      comment:
        'A module registers routes on the app it is given; it does not import the HTTP layer or the root.',
      from: { path: '^src/modules/' },
      to: { path: '^src/(http|app|cli)/|^src/main\\.ts$' },
    },
    {
      name: 'modules-talk-through-core',
      severity: 'error',
      comment: 'A module never imports another module’s files; it uses a core contract or an event.',
      from: { path: '^src/modules/([^/]+)/' },
      to: { path: '^src/modules/', pathNot: '^src/modules/$1/' },
    },
    {
      name: 'http-stays-below-the-root',
      severity: 'error',
      from: { path: '^src/http/' },
      to: { path: '^src/(app|cli)/|^src/main\\.ts$' },
    },
    {
      name: 'app-imports-module-entries-only',
      severity: 'error',
      comment:
        'The root lists modules; it does not wire their internals. It may import a module only ' +
        'through its entry, modules/<name>/<name>.module.ts or modules/<name>/index.ts; what every ' +
        'module needs from another (ctx.audit, ctx.jobs…) the other declares in `provides`.',
      from: { path: '^src/app/' },
      to: { path: '^src/modules/', pathNot: '^src/modules/([^/]+)/(\\1\\.module|index)\\.ts$' },
    },
    {
      name: 'app-stays-below-the-cli',
      severity: 'error',
      from: { path: '^src/app/' },
      to: { path: '^src/cli/|^src/main\\.ts$' },
    },
    {
      name: 'nothing-imports-the-public-entries',
      severity: 'error',
      comment:
        'src/index.ts (`plinth`) and src/testing (`plinth/testing`) are what applications import; ' +
        'Plinth itself never goes through them.',
      from: { path: '^src/', pathNot: '^src/(index\\.ts|testing/)' },
      to: { path: '^src/(index\\.ts|testing/)' },
    },
    {
      name: 'src-never-imports-tests',
      severity: 'error',
      from: { path: '^src/', pathNot: '\\.test\\.ts$' },
      to: { path: '^(test|bench)/|\\.test\\.ts$' },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '\\.test\\.ts$' },
    parser: 'swc',
    enhancedResolveOptions: {
      extensions: ['.ts', '.js', '.json'],
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      mainFields: ['module', 'main', 'types'],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
}
