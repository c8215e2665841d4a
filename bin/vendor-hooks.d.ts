// Types of vendor-hooks.js (plain JavaScript: bin/plinth.js loads it before any TypeScript).
export declare const VENDOR_FORMAT: number
export declare function vendorDir(root: string): string
export declare function installedVersion(root: string, name: string): string | undefined
export declare function packageOf(specifier: string): string
export interface VendorEntry {
  /** The bundle's file standing in for the specifier. */
  readonly url: string
  /** The directory URL (with a trailing slash) of the installed package it was built from. */
  readonly installed: string
}
export type VendorManifestCheck =
  | { entries: Map<string, VendorEntry>; skipped?: undefined }
  | { skipped: string; entries?: undefined }
export declare function readVendorManifest(root: string, dir?: string): VendorManifestCheck
export declare function useVendorBundle(
  root: string,
  options?: { dir?: string; env?: Record<string, string | undefined> },
): VendorManifestCheck
