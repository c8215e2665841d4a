// Types of vendor-bundle.js (plain JavaScript: `npm install` runs it with whatever Node runs npm).
export declare const VENDORED: readonly string[]
export interface VendorManifest {
  readonly format: number
  readonly packages: Readonly<Record<string, string>>
  readonly entries: Readonly<Record<string, string>>
}
export declare function entriesOf(root: string, name: string): string[]
export declare function buildVendorBundle(options?: {
  root?: string
  outDir?: string
  packages?: readonly string[]
}): Promise<VendorManifest>
