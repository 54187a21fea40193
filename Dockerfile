# Production image: the receiver on Bun, its inbox in SQLite on the /data volume (or Postgres with DATABASE_URL).
# test/docker.test.ts replays this file's install, start and health check commands: keep the two in step.

# Pinned to the bun devDependency (package-lock.json), so the image runs what the tests ran.
FROM oven/bun:1.4.5-slim

WORKDIR /app
ENV NODE_ENV=production

# Dependencies first, so a code change reuses this layer. Bun reads our package-lock.json (it migrates it in memory
# and writes nothing), --frozen-lockfile refuses to build when package.json and the lockfile disagree, and
# --production leaves the dev toolchain out; no dependency has an install script to run.
COPY package.json package-lock.json ./
RUN bun install --production --frozen-lockfile --ignore-scripts

COPY src ./src

# The image's own non-root user `bun` (uid 1000) must own the volume, or SQLite cannot create its file there.
RUN mkdir -p /data && chown bun:bun /data
VOLUME /data
ENV LAVA_WEBHOOK_DB=/data/lava-webhooks.sqlite \
    PORT=3000 \
    LAVA_WEBHOOK_HOST=0.0.0.0
USER bun
EXPOSE 3000

# Slim images have no curl: Bun's fetch does the probe. /healthz answers 503 once the store fails or shutdown began.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["bun", "-e", "const r = await fetch(`http://127.0.0.1:${process.env.PORT || 3000}/healthz`).catch(() => null); process.exit(r?.ok ? 0 : 1)"]

# The server drains on SIGTERM: stops taking requests, lets running handlers finish, closes the store.
# Give it LAVA_WEBHOOK_SHUTDOWN_TIMEOUT (10 s) plus a margin: docker stop -t 15, stop_grace_period: 15s.
STOPSIGNAL SIGTERM
CMD ["bun", "run", "src/server.ts"]
