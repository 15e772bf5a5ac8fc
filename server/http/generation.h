#pragma once
// Drives one engine request to its HTTP response, asynchronously, on the connection's strand.
//
// The engine calls the handle's notifier on its own thread; the notifier only posts "drain" to
// the strand. Drain takes everything the handle has (TryNext, never blocking), encodes it and
// queues one write. While that write is in flight Drain does nothing: the engine merges further
// output into the handle, so a slow client costs memory proportional to its own output and never
// blocks the engine thread. No thread per stream: thousands of streams share the I/O threads.
//
// The client going away (socket EOF or reset, a failed or timed-out write) closes the handle, so
// the engine aborts the request within one step.
#include <memory>

#include "engine/engine.h"
#include "server/http/http_session.h"
#include "server/openai_response.h"

namespace r2::server::http {

// Submits `request` and answers on `session`: SSE when `stream`, else one JSON body. Errors from
// Submit (400 / 429 with Retry-After / 503) are answered directly.
void StartGeneration(const std::shared_ptr<HttpSession>& session, engine::Request request,
                     std::unique_ptr<ResponseEncoder> encoder, bool stream);

}  // namespace r2::server::http
