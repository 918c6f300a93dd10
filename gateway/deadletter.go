package gateway

import (
	"context"
	"log/slog"
)

// LogSink is the dead-letter sink without a state directory: it logs the
// whole event at error level, so a dead letter is never silently lost (a log
// collector keeps it). The dispatcher counts it.
type LogSink struct {
	log *slog.Logger
}

var _ DeadLetterSink = (*LogSink)(nil)

// NewLogSink returns a sink that writes to log.
func NewLogSink(log *slog.Logger) *LogSink { return &LogSink{log: log} }

// Write logs dl with its whole event.
func (s *LogSink) Write(ctx context.Context, dl DeadLetter) error {
	s.log.LogAttrs(ctx, slog.LevelError, "dead letter",
		slog.String("origin", string(dl.Origin)),
		slog.String("processor", dl.Processor),
		slog.String("destination", dl.Destination),
		slog.String("filter", dl.Filter),
		slog.String("reason", dl.Reason),
		slog.String("error", dl.Error),
		slog.Int("attempts", dl.Attempts),
		slog.String("event", letterEvent(dl)))
	return nil
}

// letterEvent is what a log line shows of a letter's event: the CloudEvent,
// or the raw XML of one the stream could not decode.
func letterEvent(dl DeadLetter) string {
	if dl.Event == nil {
		return dl.Raw
	}
	return string(dl.Event.JSON)
}

// letterKey is the vCenter key of a letter's event.
func letterKey(dl DeadLetter) int32 {
	if dl.Event == nil {
		return dl.Position.Key
	}
	return dl.Event.Key
}
