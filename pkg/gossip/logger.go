package gossip

import (
	"context"
	"log"
	"log/slog"
	"strings"
)

// slogWriter turns memberlist's log lines ("[LEVEL] memberlist: msg") into
// slog records at the matching level. Safe for concurrent use (log.Logger
// serializes writes, and slog handlers are safe).
type slogWriter struct {
	log *slog.Logger
}

// newMemberlistLogger returns the *log.Logger memberlist is given: no prefix
// and no timestamp, since slog adds its own.
func newMemberlistLogger(l *slog.Logger) *log.Logger {
	return log.New(slogWriter{log: l}, "", 0)
}

// Write implements io.Writer; each call is one line from log.Logger.
func (w slogWriter) Write(p []byte) (int, error) {
	level, msg := parseMemberlistLine(string(p))
	w.log.Log(context.Background(), level, msg)
	return len(p), nil
}

// memberlistLevels maps memberlist's level tags to slog levels.
var memberlistLevels = map[string]slog.Level{
	"TRACE": slog.LevelDebug,
	"DEBUG": slog.LevelDebug,
	"INFO":  slog.LevelInfo,
	"WARN":  slog.LevelWarn,
	"ERR":   slog.LevelError,
	"ERROR": slog.LevelError,
}

// parseMemberlistLine splits "[WARN] memberlist: msg\n" into its level and
// "msg". A line without a known tag is logged at Info, whole.
func parseMemberlistLine(line string) (slog.Level, string) {
	line = strings.TrimRight(line, "\r\n")
	level := slog.LevelInfo
	if rest, ok := strings.CutPrefix(line, "["); ok {
		if tag, msg, ok := strings.Cut(rest, "]"); ok {
			if l, known := memberlistLevels[tag]; known {
				level, line = l, strings.TrimSpace(msg)
			}
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	if strings.HasPrefix(line, "Conflicting address") {
		level = slog.LevelDebug // the ConflictDelegate logs it once more, with advice
	}
	return level, line
}
