/** The SDK's version (kept equal to package.json's by a test); sent as X-Client-Version. */
export const VERSION = '0.1.0';
