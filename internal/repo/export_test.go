package repo

import "github.com/cairnproject/cairn/internal/repo/format"

// SetStreamChunker makes r cut streams with p instead of StreamChunker():
// tests cut small chunks, so that streams of a few MiB exercise what
// production sizes need hundreds of MiB for. p is recorded in the
// manifests, as any chunker's parameters are.
func SetStreamChunker(r *Repository, p format.ChunkerParams) { r.streamChunker = p }
