// A module resolution hook for @anycable/serverless-js 0.1.0: its published ES modules import directories and
// extension-less files (`from '../rpc'`), which bundlers such as Next.js resolve and Node's own ESM loader
// does not. The hook tries `<specifier>.js` and `<specifier>/index.js` for relative imports inside that package
// only, the way a Node app loading the package without a bundler has to. Registered by lib/serverless-app.js.
const PACKAGE = '/node_modules/@anycable/serverless-js/'

export async function resolve (specifier, context, nextResolve) {
  const inPackage = context.parentURL?.includes(PACKAGE) && specifier.startsWith('.') && !specifier.endsWith('.js')
  if (!inPackage) return nextResolve(specifier, context)
  try {
    return await nextResolve(`${specifier}.js`, context)
  } catch {
    return nextResolve(`${specifier}/index.js`, context)
  }
}
