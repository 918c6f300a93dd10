// Package deadletter is the dead-letter file under the state directory:
// JSON lines, one event the router gave up on per line, with why, size-capped
// and rotated; and the reader that `vmware-event-router replay` uses.
package deadletter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// FileName is the current dead-letter file in the directory; rotated files
// are named dead-letter-TIMESTAMP.jsonl.
const FileName = "dead-letter.jsonl"

// KeepRotated is how many rotated files the sink fills besides the current
// one. Together with the size cap this bounds the disk used: (KeepRotated+1)
// × dead_letter_max_size. Once that much is held the sink is full: it never
// deletes a letter, it holds deliveries until files are moved away.
const KeepRotated = 4

// RetryInterval is how often a Write waiting on a full sink looks for space.
const RetryInterval = time.Second

// Line is one dead letter as written. A letter of origin "stream" has no
// "event": "raw" holds the XML vCenter sent, which did not decode.
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
	Event       json.RawMessage `json:"event,omitempty"`
	Raw         string          `json:"raw,omitempty"`

	// LineNo is the line's number in the file it was read from.
	LineNo int `json:"-"`
}

// Sink appends dead letters to the file in dir.
type Sink struct {
	dir     string
	maxSize int64
	log     *slog.Logger
	fullG   prometheus.Gauge // nil without metrics
	retry   time.Duration
	now     func() time.Time
	rename  func(oldpath, newpath string) error // os.Rename; tests inject a failure

	mu     sync.Mutex
	f      *os.File // nil after a failed rotation or write: the next Write reopens
	fi     os.FileInfo
	size   int64
	closed bool
	full   bool
	held   int64 // bytes in the directory when it was found full
}

var _ gateway.DeadLetterSink = (*Sink)(nil)

// NewSink opens (creating) the dead-letter file in dir. m may be nil.
func NewSink(dir string, maxSize int64, log *slog.Logger, m *metrics.Metrics) (*Sink, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dead-letter directory: %w", err)
	}
	s := &Sink{dir: dir, maxSize: maxSize, log: log, retry: RetryInterval, now: time.Now, rename: os.Rename}
	if m != nil {
		s.fullG = m.DeadLetterSinkFull
		s.fullG.Set(0)
	}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Sink) path() string { return filepath.Join(s.dir, FileName) }

// open opens the current file for appending. A file that does not end in a
// newline was cut by a crash mid-write: a newline is appended first, so the
// torn line stays a line of its own (Read skips it) rather than swallowing
// the next letter.
func (s *Sink) open() error {
	f, err := os.OpenFile(s.path(), os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("dead-letter file: %w", err)
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() > 0 {
		last := make([]byte, 1)
		if _, err = f.ReadAt(last, fi.Size()-1); err == nil && last[0] != '\n' {
			s.log.Warn("dead-letter file ends in a torn line (the router stopped while writing it); replay skips it",
				"file", s.path(), "bytes", fi.Size())
			if _, err = f.Write([]byte{'\n'}); err == nil {
				fi, err = f.Stat()
			}
		}
	}
	if err == nil {
		// A new file's name must survive a crash as well as its content.
		err = syncDir(s.dir)
	}
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("dead-letter file: %w", err)
	}
	s.f, s.fi, s.size = f, fi, fi.Size()
	return nil
}

// Write appends dl as one line and fsyncs it: a dead letter is the only copy
// of the event. When the sink is full it deletes nothing: it waits, looking
// for space every RetryInterval, until files are moved away or ctx is done.
// Meanwhile the delivery that gave up holds its queue slot, so the queue
// fills and the stream is held, as for an unreachable destination.
func (s *Sink) Write(ctx context.Context, dl gateway.DeadLetter) error {
	data, err := encode(dl)
	if err != nil {
		return err
	}
	var t *time.Timer
	for {
		written, err := s.tryWrite(data)
		if written || err != nil {
			return err
		}
		if t == nil {
			t = time.NewTimer(s.retry)
			defer t.Stop()
		} else {
			t.Reset(s.retry)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dead-letter sink full (%s): %w", s.dir, ctx.Err())
		case <-t.C:
		}
	}
}

func encode(dl gateway.DeadLetter) ([]byte, error) {
	line := Line{
		Time: dl.Time.UTC(), Origin: dl.Origin, Processor: dl.Processor, Destination: dl.Destination,
		Filter: dl.Filter, Reason: dl.Reason, Error: dl.Error, Attempts: dl.Attempts,
		Key: dl.Position.Key, CreatedTime: dl.Position.Time.UTC(), Raw: dl.Raw,
	}
	if dl.Event != nil {
		line.Key, line.CreatedTime, line.Entity = dl.Event.Key, dl.Event.Time.UTC(), dl.Event.Entity
		line.Event = json.RawMessage(dl.Event.JSON)
	}
	data, err := json.Marshal(line)
	if err != nil {
		return nil, fmt.Errorf("dead letter: %w", err)
	}
	return append(data, '\n'), nil
}

// tryWrite writes data unless the sink is full (written false, err nil).
func (s *Sink) tryWrite(data []byte) (written bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, errors.New("dead-letter sink closed")
	}
	if err := s.reopen(); err != nil {
		return false, err
	}
	if s.size > 0 && s.size+int64(len(data)) > s.maxSize {
		rotated, err := filepath.Glob(filepath.Join(s.dir, "dead-letter-*.jsonl"))
		if err != nil {
			return false, fmt.Errorf("dead-letter rotation: %w", err)
		}
		if len(rotated) >= KeepRotated {
			s.setFull(true, rotated)
			return false, nil
		}
		if err := s.rotate(); err != nil {
			return false, err
		}
	}
	if _, err := s.f.Write(data); err != nil {
		// The line may be half written: reopening appends the newline
		// that keeps the next letter readable.
		s.drop()
		return false, fmt.Errorf("dead-letter file: %w", err)
	}
	s.size += int64(len(data))
	if err := s.f.Sync(); err != nil {
		s.drop()
		return false, fmt.Errorf("dead-letter file: fsync: %w", err)
	}
	s.setFull(false, nil)
	return true, nil
}

// reopen opens the current file when there is none (a failed rotation or
// write) or when the one held is no longer at its path (an operator moved
// it away to make room).
func (s *Sink) reopen() error {
	if s.f != nil {
		fi, err := os.Stat(s.path())
		if err == nil && os.SameFile(fi, s.fi) {
			return nil
		}
		s.drop()
	}
	return s.open()
}

func (s *Sink) drop() {
	if s.f != nil {
		_ = s.f.Close()
		s.f = nil
	}
}

// setFull records whether the sink is full, logging and setting the gauge
// only when that changes.
func (s *Sink) setFull(full bool, rotated []string) {
	if full {
		held := s.size
		for _, f := range rotated {
			if fi, err := os.Stat(f); err == nil {
				held += fi.Size()
			}
		}
		s.held = held
	}
	if full == s.full {
		return
	}
	s.full = full
	if s.fullG != nil {
		s.fullG.Set(map[bool]float64{false: 0, true: 1}[full])
	}
	if full {
		s.log.Error("dead-letter sink full: deliveries that give up now wait, and the stream is held; move dead-letter files away to resume",
			"dir", s.dir, "bytes", s.held, "limit", (KeepRotated+1)*s.maxSize)
		return
	}
	s.log.Warn("dead-letter sink has space again; deliveries resume", "dir", s.dir)
}

// Degraded returns why the sink holds deliveries, or "" when it does not:
// the daemon shows it on /readyz.
func (s *Sink) Degraded() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.full {
		return ""
	}
	return fmt.Sprintf("dead-letter sink full: %s in %s; move files away to resume", formatSize(s.held), s.dir)
}

func formatSize(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%d KiB", (n+1<<10-1)>>10)
	}
	return fmt.Sprintf("%d MiB", (n+1<<20-1)>>20)
}

// rotate renames the current file aside, makes the rename durable and opens
// a new one. On failure the sink has no file open; the next Write tries
// again.
func (s *Sink) rotate() error {
	s.drop()
	base := filepath.Join(s.dir, "dead-letter-"+s.now().UTC().Format("20060102T150405.000000000Z"))
	rotated := base + ".jsonl"
	for i := 1; ; i++ {
		// Never rename over an earlier rotated file (a coarse clock).
		if _, err := os.Lstat(rotated); errors.Is(err, fs.ErrNotExist) {
			break
		}
		rotated = fmt.Sprintf("%s-%d.jsonl", base, i)
	}
	if err := s.rename(s.path(), rotated); err != nil {
		return fmt.Errorf("dead-letter rotation: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("dead-letter rotation: fsync directory: %w", err)
	}
	s.log.Info("dead-letter file rotated", "file", rotated)
	return s.open()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer func() { _ = d.Close() }()
	return d.Sync()
}

// Close closes the file. A Write waiting for space then returns an error.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}

// maxLine bounds one line: a letter's event is at most MaxEventSize, its raw
// XML or error text a little more.
const maxLine = 2*gateway.MaxEventSize + 64<<10

// Read reads a dead-letter file. A line that is not a dead letter is an
// error naming the line, except a torn line (a JSON object cut short, as a
// crash mid-write leaves it, or an unreadable last line without its
// newline): its number is returned in torn and it is skipped.
func Read(r io.Reader, name string) (lines []Line, torn []int, err error) {
	br := bufio.NewReader(r)
	for n := 1; ; n++ {
		b, rerr := br.ReadBytes('\n')
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return nil, nil, fmt.Errorf("%s: %w", name, rerr)
		}
		if len(b) > maxLine {
			return nil, nil, fmt.Errorf("%s:%d: not a dead letter: line of %d bytes", name, n, len(b))
		}
		last := errors.Is(rerr, io.EOF)
		text := bytes.TrimSpace(b)
		if len(text) > 0 {
			l, err := parseLine(text)
			switch {
			case err == nil:
				l.LineNo = n
				lines = append(lines, l)
			case isTorn(text, err) || (last && b[len(b)-1] != '\n'):
				torn = append(torn, n)
			default:
				return nil, nil, fmt.Errorf("%s:%d: not a dead letter: %w", name, n, err)
			}
		}
		if last {
			return lines, torn, nil
		}
	}
}

func parseLine(text []byte) (Line, error) {
	var l Line
	if err := json.Unmarshal(text, &l); err != nil {
		return Line{}, err
	}
	switch l.Origin {
	case gateway.OriginStream:
	case gateway.OriginFilter, gateway.OriginProcessor:
		if len(l.Event) == 0 {
			return Line{}, errors.New("no \"event\"")
		}
	default:
		return Line{}, errors.New("needs \"origin\" filter, processor or stream")
	}
	return l, nil
}

// isTorn reports whether text is a JSON object cut short.
func isTorn(text []byte, err error) bool {
	var se *json.SyntaxError
	return text[0] == '{' && errors.As(err, &se) && se.Offset >= int64(len(text))
}

// PipelineEvent rebuilds the pipeline event of a dead letter.
func (l Line) PipelineEvent() (*gateway.Event, error) {
	orig := &gateway.Event{Time: l.CreatedTime, Key: l.Key, Entity: l.Entity}
	return gateway.ParseReplacement(l.Event, orig)
}
