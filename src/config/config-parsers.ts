import type { ConfigKey, DefaultValue } from './config-types.ts'

interface KeyOptions<T> {
  env: string
  doc: string
  default?: DefaultValue<T>
  defaultDoc?: string
  secret?: boolean
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }
const SIZE_UNITS: Record<string, number> = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 }

/** A free-form string; empty strings count as unset. */
export function str(opts: KeyOptions<string>): ConfigKey<string> {
  return { ...opts, type: 'string', parse: (raw) => raw }
}

/** Like `str`, but with no default the value is `undefined` when unset. */
export function optionalStr(opts: KeyOptions<string | undefined>): ConfigKey<string | undefined> {
  return { ...opts, type: 'string', parse: (raw) => raw }
}

export function int(opts: KeyOptions<number> & { min?: number; max?: number }): ConfigKey<number> {
  const { min = Number.MIN_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER } = opts
  return {
    ...opts,
    type: `integer (${min}..${max})`,
    parse(raw) {
      if (!/^-?\d+$/.test(raw)) throw new Error(`expected a whole number, got "${raw}"`)
      const n = Number(raw)
      if (n < min || n > max) throw new Error(`expected a number from ${min} to ${max}, got ${n}`)
      return n
    },
  }
}

export function ratio(opts: KeyOptions<number>): ConfigKey<number> {
  return {
    ...opts,
    type: 'number (0..1)',
    parse(raw) {
      const n = Number(raw)
      if (raw.trim() === '' || !Number.isFinite(n) || n < 0 || n > 1) {
        throw new Error(`expected a number from 0 to 1, got "${raw}"`)
      }
      return n
    },
  }
}

export function bool(opts: KeyOptions<boolean>): ConfigKey<boolean> {
  return {
    ...opts,
    type: 'boolean',
    parse(raw) {
      const v = raw.trim().toLowerCase()
      if (['true', '1', 'yes', 'on'].includes(v)) return true
      if (['false', '0', 'no', 'off'].includes(v)) return false
      throw new Error(`expected true or false, got "${raw}"`)
    },
  }
}

export function oneOf<const V extends string>(values: readonly V[], opts: KeyOptions<V>): ConfigKey<V> {
  return {
    ...opts,
    type: values.join(' | '),
    parse(raw) {
      if ((values as readonly string[]).includes(raw)) return raw as V
      throw new Error(`expected one of ${values.join(', ')}, got "${raw}"`)
    },
  }
}

/** Milliseconds; accepts `250ms`, `5s`, `2m`, `1h`, `30d` or a bare number of milliseconds. */
export function duration(opts: KeyOptions<number>): ConfigKey<number> {
  return {
    ...opts,
    type: 'duration (e.g. 500ms, 5s, 2m)',
    parse(raw) {
      const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/i.exec(raw.trim())
      if (!m) throw new Error(`expected a duration such as 500ms, 5s or 2m, got "${raw}"`)
      return Math.round(Number(m[1]) * (DURATION_UNITS[(m[2] ?? 'ms').toLowerCase()] ?? 1))
    },
  }
}

/** Bytes; accepts `512kb`, `1mb`, or a bare number of bytes. */
export function size(opts: KeyOptions<number>): ConfigKey<number> {
  return {
    ...opts,
    type: 'size (e.g. 512kb, 1mb)',
    parse(raw) {
      const m = /^(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?$/i.exec(raw.trim())
      if (!m) throw new Error(`expected a size such as 512kb or 1mb, got "${raw}"`)
      return Math.round(Number(m[1]) * (SIZE_UNITS[(m[2] ?? 'b').toLowerCase()] ?? 1))
    },
  }
}

/** A comma-separated list; blanks are dropped. */
export function list(
  opts: KeyOptions<readonly string[]> & { item?: (v: string) => void },
): ConfigKey<readonly string[]> {
  return {
    ...opts,
    type: 'comma-separated list',
    parse(raw) {
      const items = raw
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
      for (const item of items) opts.item?.(item)
      return Object.freeze(items)
    },
  }
}

export function url(
  opts: KeyOptions<string | undefined> & { protocols: readonly string[] },
): ConfigKey<string | undefined> {
  return {
    ...opts,
    type: `URL (${opts.protocols.join(', ')})`,
    parse(raw) {
      let parsed: URL
      try {
        parsed = new URL(raw)
      } catch {
        throw new Error(`expected a URL such as ${opts.protocols[0]}//host:port/...`)
      }
      if (!opts.protocols.includes(parsed.protocol)) {
        throw new Error(`expected a ${opts.protocols.join(' or ')} URL, got "${parsed.protocol}"`)
      }
      return raw
    },
  }
}
