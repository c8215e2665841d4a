import { Type } from 'typebox'
import type { PlinthModule } from '../../core/module.ts'
import { PLINTH_VERSION } from '../../core/version.ts'
import createSettings from './migrations/0001-create-settings.ts'

const ApiInfo = Type.Object({
  name: Type.Literal('plinth'),
  version: Type.String(),
  api: Type.Literal('v1'),
})

/** The platform's own tables and the API's front door (`GET /api/v1`). */
export const systemModule: PlinthModule = {
  name: 'system',
  migrations: { '0001-create-settings': createSettings },
  routes(api) {
    api.get(
      '/',
      {
        config: { public: true, database: false },
        schema: { tags: ['system'], summary: 'API name and version', response: { 200: ApiInfo } },
      },
      async () => ({ name: 'plinth' as const, version: PLINTH_VERSION, api: 'v1' as const }),
    )
  },
}
