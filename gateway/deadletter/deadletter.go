// Package deadletter is the dead-letter file under the state directory:
// JSON lines, one event the router gave up on per line, with why, size-capped
// and rotated; and the reader that `vmware-event-router replay` uses.
package deadletter

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway"
)

// FileName is the current dead-letter file in the directory; rotated files
// are named dead-letter-TIMESTAMP.jsonl.
const FileName = "dead-letter.jsonl"

// KeepRotated is how many rotated files are kept besides the current one.
// Together with the size cap this bounds the disk used: (KeepRotated+1) ×
// dead_letter_max_size.
const KeepRotated = 4

// Line is one dead letter as written.
type Line struct {
	Time        time.Time       `json:"time"`
	Origin      gateway.Origin  `json:"origin"`
	Processor   string          `json:"processor,omitempty"`
	Destination string          `json:"destination,omitempty"`
	Filter      string          `json:"filter,omitempty"`
	Reason      string          `json:"reason"`
	Error       string          `json:"error"`
	Attempts    int             `json:"attempts"`
	Key         int32           `json:"key"`
	CreatedTime time.Time       `json:"createdTime"`
	Entity      string          `json:"entity,omitempty"`
	Event       json.RawMessage `json:"event"`
}

// Sink appends dead letters to the file in dir.
type Sink struct {
	dir     string
	maxSize int64
	log     *slog.Logger

	mu   sync.Mutex
	f    *os.File
	size int64
}

var _ gateway.DeadLetterSink = (*Sink)(nil)

// NewSink opens (creating) the dead-letter file in dir.
func NewSink(dir string, maxSize int64, log *slog.Logger) (*Sink, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dead-letter directory: %w", err)
	}
	s := &Sink{dir: dir, maxSize: maxSize, log: log}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Sink) open() error {
	f, err := os.OpenFile(filepath.Join(s.dir, FileName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("dead-letter file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("dead-letter file: %w", err)
	}
	s.f, s.size = f, fi.Size()
	return nil
}

// Write appends dl as one line and fsyncs it: a dead letter is the only copy
// of the event.
func (s *Sink) Write(_ context.Context, dl gateway.DeadLetter) error {
	line := Line{
		Time: dl.Time.UTC(), Origin: dl.Origin, Processor: dl.Processor, Destination: dl.Destination,
		Filter: dl.Filter, Reason: dl.Reason, Error: dl.Error, Attempts: dl.Attempts,
		Key: dl.Event.Key, CreatedTime: dl.Event.Time.UTC(), Entity: dl.Event.Entity,
		Event: json.RawMessage(dl.Event.JSON),
	}
	data, err := json.Marshal(line)
	if err != nil {
		return fmt.Errorf("dead letter: %w", err)
	}
	data = append(data, '\n')
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return errors.New("dead-letter file closed")
	}
	if s.size > 0 && s.size+int64(len(data)) > s.maxSize {
		if err := s.rotate(); err != nil {
			return err
		}
	}
	if _, err := s.f.Write(data); err != nil {
		return fmt.Errorf("dead-letter file: %w", err)
	}
	s.size += int64(len(data))
	return s.f.Sync()
}

// rotate renames the current file aside and opens a new one, removing the
// oldest rotated files beyond KeepRotated (each logged).
func (s *Sink) rotate() error {
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("dead-letter file: %w", err)
	}
	s.f = nil
	rotated := filepath.Join(s.dir, "dead-letter-"+time.Now().UTC().Format("20060102T150405.000000000Z")+".jsonl")
	if err := os.Rename(filepath.Join(s.dir, FileName), rotated); err != nil {
		return fmt.Errorf("dead-letter rotation: %w", err)
	}
	s.log.Info("dead-letter file rotated", "file", rotated)
	old, _ := filepath.Glob(filepath.Join(s.dir, "dead-letter-*.jsonl"))
	sort.Strings(old)
	for len(old) > KeepRotated {
		if err := os.Remove(old[0]); err == nil {
			s.log.Warn("oldest dead-letter file removed: dead_letter_max_size × 5 reached", "file", old[0])
		}
		old = old[1:]
	}
	return s.open()
}

// Close closes the file.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}

// Read reads a dead-letter file. A line that is not a dead letter is an
// error naming the line.
func Read(r io.Reader, name string) ([]Line, error) {
	var out []Line
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 2*gateway.MaxEventSize+64<<10)
	n := 0
	for sc.Scan() {
		n++
		if len(sc.Bytes()) == 0 {
			continue
		}
		var l Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("%s:%d: not a dead letter: %w", name, n, err)
		}
		if len(l.Event) == 0 || (l.Origin != gateway.OriginFilter && l.Origin != gateway.OriginProcessor) {
			return nil, fmt.Errorf("%s:%d: not a dead letter: needs \"event\" and \"origin\" filter or processor", name, n)
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}

// PipelineEvent rebuilds the pipeline event of a dead letter.
func (l Line) PipelineEvent() (*gateway.Event, error) {
	orig := &gateway.Event{Time: l.CreatedTime, Key: l.Key, Entity: l.Entity}
	return gateway.ParseReplacement(l.Event, orig)
}
