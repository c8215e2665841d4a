import type { PlinthModule } from '../../core/module.ts'
import { privacyRoutes } from './privacy.routes.ts'

/**
 * Export and erasure of a person's data (GDPR access and erasure requests), built from every
 * module's `personalData` declarations (core/privacy.ts): `GET /api/v1/me/export`,
 * `DELETE /api/v1/me`, their administrator variants, and `plinth privacy`. Owns no table.
 */
export const privacyModule: PlinthModule = {
  name: 'privacy',
  routes: privacyRoutes,
}
