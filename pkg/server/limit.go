package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"google.golang.org/grpc/codes"
)

// limitBody bounds the request body h may read to max bytes (max <= 0: no
// bound), as --max-msg-bytes bounds a gRPC message, and answers a larger
// body 413 without reading it all: at once when Content-Length says so,
// after max+1 bytes when the length is not announced (chunked). The answer
// has the shape of the gateway's errors ({"code", "message", "details"}),
// code RESOURCE_EXHAUSTED, with a message naming the flag.
func limitBody(h http.Handler, max int64) http.Handler {
	if max <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Body == nil || r.Body == http.NoBody:
		case r.ContentLength > max:
			tooLarge(w, r.ContentLength, max)
			return
		case r.ContentLength < 0:
			// Unannounced length: read at most max+1 bytes to know.
			body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
			if err != nil {
				http.Error(w, "reading the request body: "+err.Error(), http.StatusBadRequest)
				return
			}
			if int64(len(body)) > max {
				tooLarge(w, -1, max)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
		default:
			// A client that sends more than it announced is cut off at max.
			r.Body = http.MaxBytesReader(w, r.Body, max)
		}
		h.ServeHTTP(w, r)
	})
}

// tooLarge answers 413 for a body of size bytes (-1: unknown, beyond max).
func tooLarge(w http.ResponseWriter, size, max int64) {
	msg := fmt.Sprintf("request body is %d bytes; at most %d allowed (--max-msg-bytes): split the batch", size, max)
	if size < 0 {
		msg = fmt.Sprintf("request body is over %d bytes, the most allowed (--max-msg-bytes): split the batch", max)
	}
	body, _ := json.Marshal(struct {
		Code    codes.Code `json:"code"`
		Message string     `json:"message"`
		Details []any      `json:"details"`
	}{codes.ResourceExhausted, msg, []any{}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Connection", "close") // the rest of the body is not read
	w.WriteHeader(http.StatusRequestEntityTooLarge)
	_, _ = w.Write(body)
}
