import type { PlinthModule } from '../core/module.ts'
import { systemModule } from './system/system.module.ts'

/** Every built-in module, in the order their routes are registered. */
export const builtinModules: readonly PlinthModule[] = [systemModule]
