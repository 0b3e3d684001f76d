// The Prisma CLI of the database e2e tests (tests/e2e/prisma_cli.py), with the schema engine
// Prisma ships as WebAssembly in its npm package (engine 'js'), so that nothing is downloaded
// from Prisma's servers. The adapter connects to the test's PostgreSQL (DATABASE_URL).
import { defineConfig } from 'prisma/config'
import { PrismaPg } from '@prisma/adapter-pg'

export default defineConfig({
  experimental: { adapter: true },
  engine: 'js',
  async adapter() {
    // A short idle timeout: the pool would otherwise keep the CLI alive 10 s after its work.
    return new PrismaPg({ connectionString: process.env.DATABASE_URL, idleTimeoutMillis: 50 })
  },
})
