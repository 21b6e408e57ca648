# syntax=docker/dockerfile:1.7
# The web UI: a Next.js static export served by `serve`.
# Kept out of web/ and named *.Dockerfile so that Railway keeps building with Railpack.
# Build from the repository root:
#   docker build -f docker/web.Dockerfile --build-arg NEXT_PUBLIC_API_URL=http://localhost:8000 .
ARG NODE_VERSION=22
FROM node:${NODE_VERSION}-slim AS build
ENV NEXT_TELEMETRY_DISABLED=1 NPM_CONFIG_UPDATE_NOTIFIER=false NPM_CONFIG_FUND=false
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci
COPY web/ ./
# Inlined at build time: the browser calls this URL. Empty means the API is on the
# same origin as the page.
ARG NEXT_PUBLIC_API_URL=
ENV NEXT_PUBLIC_API_URL=${NEXT_PUBLIC_API_URL}
RUN npm run build

FROM node:${NODE_VERSION}-slim
RUN npm install --global --no-audit --no-fund serve@14.2.7 && npm cache clean --force
WORKDIR /srv
COPY --from=build /web/out ./out
USER node
ENV PORT=3000
EXPOSE 3000
CMD ["sh", "-c", "exec serve out --no-port-switching --no-clipboard -l tcp://[::]:${PORT}"]
