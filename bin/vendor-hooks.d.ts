// Types of vendor-hooks.js (plain JavaScript: bin/plinth.js loads it before any TypeScript).
export declare const VENDOR_FORMAT: number
export declare function vendorDir(root: string): string
export declare function installedVersion(root: string, name: string): string | undefined
export type VendorManifestCheck =
  | { entries: Map<string, string>; skipped?: undefined }
  | { skipped: string; entries?: undefined }
export declare function readVendorManifest(root: string, dir?: string): VendorManifestCheck
export declare function useVendorBundle(
  root: string,
  options?: { dir?: string; env?: Record<string, string | undefined> },
): VendorManifestCheck
