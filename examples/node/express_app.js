// An Express API allowing each API key 10 requests a minute, decided in Redis.
//
//     node examples/node/express_app.js    # http://127.0.0.1:3000/api
//     curl -i -H 'X-API-Key: k1' http://127.0.0.1:3000/api
//
// REDIS_URL (default redis://localhost:6379) names the server, PORT the port.

import express from 'express';
import { RateLimiter } from 'redis-ratelimit-client';
import { byHeader, rateLimit } from 'redis-ratelimit-client/express';

const limiter = await new RateLimiter({ url: process.env.REDIS_URL ?? 'redis://localhost:6379' }).connect();
const app = express();
app.use('/api', rateLimit({ limiter, limit: '10 60', key: byHeader('X-API-Key') }));
app.get('/api', (req, res) => res.json({ ok: true }));

const server = app.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
