package main

import (
	"encoding/hex"
	"encoding/json"
	"unicode/utf8"

	"xshm.dev/specreader"
)

type jsonMutex struct {
	Word      uint32 `json:"word"`
	TID       uint32 `json:"tid"`
	OwnerDied bool   `json:"owner_died"`
	Waiters   bool   `json:"waiters"`
}

type jsonReader struct {
	Index      uint64 `json:"index"`
	State      uint64 `json:"state"`
	Generation uint32 `json:"generation"`
	Attached   bool   `json:"attached"`
	Alive      bool   `json:"alive"`
	Cursor     uint64 `json:"cursor"`
	Lost       uint64 `json:"lost"`
	Received   uint64 `json:"received"`
	Start      uint64 `json:"start"`
	Skipped    uint64 `json:"skipped"`
	Group      uint32 `json:"group"` // group index + 1 of a member, 0 solo (19.1)
	Hold       uint64 `json:"hold"`  // a member's step in progress (26.8.2)
	Sleeping   uint32 `json:"sleeping"`
	// CountGap is (received + lost + skipped) − (cursor − start), attached
	// solo entries only (28.2): 0, or the one advance in progress.
	CountGap   *int64 `json:"count_gap,omitempty"`
	PID        uint32 `json:"pid"`
	AttachedNs int64  `json:"attached_ns"`
}

type jsonGroup struct {
	Index        uint64 `json:"index"`
	Name         string `json:"name"`
	Generation   uint32 `json:"generation"`
	CreatedNs    int64  `json:"created_ns"`
	Start        uint64 `json:"start"`
	Cursor       uint64 `json:"cursor"`
	Received     uint64 `json:"received"`
	Lost         uint64 `json:"lost"`
	Skipped      uint64 `json:"skipped"`
	Members      int    `json:"members"`
	AliveMembers int    `json:"alive_members"`
	// CountGap is (cursor − start) − (received + lost + skipped) (28.2): 0,
	// or the one step in progress.
	CountGap int64 `json:"count_gap"`
}

type jsonWriter struct {
	Index      uint64 `json:"index"`
	State      uint64 `json:"state"`
	Generation uint32 `json:"generation"`
	Attached   bool   `json:"attached"`
	Alive      bool   `json:"alive"`
	Sent       uint64 `json:"sent"`
	Sleeping   uint32 `json:"sleeping"`
	PID        uint32 `json:"pid"`
	AttachedNs int64  `json:"attached_ns"`
}

type jsonSlot struct {
	Slot       uint64 `json:"slot"`
	Status     string `json:"status"`
	Seq        uint64 `json:"seq"`
	Word       uint64 `json:"word"`
	BeyondHead bool   `json:"beyond_head,omitempty"`
	// committed
	Length        *uint64         `json:"length,omitempty"`
	TimestampNs   *int64          `json:"timestamp_ns,omitempty"`
	WriterPID     *uint32         `json:"writer_pid,omitempty"`
	Payload       *string         `json:"payload,omitempty"` // hex
	Text          *string         `json:"text,omitempty"`    // the payload, when it is UTF-8
	Values        json.RawMessage `json:"values,omitempty"`  // frames: the array, flat in C order
	CorruptLength bool            `json:"corrupt_length,omitempty"`
	// the claimant
	WriterIndex uint32 `json:"writer_index"`
	WriterState uint64 `json:"writer_state"`
	WriterAlive *bool  `json:"writer_alive,omitempty"` // writing only (23.2)
	Discarded   int    `json:"discarded_copies,omitempty"`
}

type jsonMessage struct {
	Seq         uint64          `json:"seq"`
	Length      uint64          `json:"length"`
	TimestampNs int64           `json:"timestamp_ns"`
	WriterPID   uint32          `json:"writer_pid"`
	Payload     string          `json:"payload"`
	Text        *string         `json:"text,omitempty"`
	Values      json.RawMessage `json:"values,omitempty"`
}

type jsonModel struct {
	Recovered bool          `json:"recovered"`
	Entry     uint64        `json:"entry"`
	Head      uint64        `json:"head"`
	Cursor0   uint64        `json:"cursor0"`
	Cursor    uint64        `json:"cursor"`
	Received  uint64        `json:"received"`
	Lost      uint64        `json:"lost"`
	StoppedAt string        `json:"stopped_at"`
	Error     *string       `json:"error,omitempty"`
	Messages  []jsonMessage `json:"messages"`
	Abandoned uint64        `json:"abandoned"`
	Dropped   uint64        `json:"dropped"`
}

type jsonStream struct {
	Kind          string         `json:"kind"`
	Path          string         `json:"path"`
	LayoutVersion int            `json:"layout_version"`
	Backpressure  string         `json:"backpressure"`
	Capacity      uint64         `json:"capacity"`
	MaxBytes      uint64         `json:"max_bytes"`
	MaxReaders    uint64         `json:"max_readers"`
	MaxWriters    uint64         `json:"max_writers"`
	DType         string         `json:"dtype"`
	Shape         []uint64       `json:"shape"`
	SlotSize      uint64         `json:"slot_size"`
	ReadersOffset uint64         `json:"readers_offset"`
	WritersOffset uint64         `json:"writers_offset"`
	SlotsOffset   uint64         `json:"slots_offset"`
	TotalSize     uint64         `json:"total_size"`
	MutexSize     uint32         `json:"mutex_size"`
	MutexABI      uint32         `json:"mutex_abi"`
	CreationID    string         `json:"creation_id"`
	CreatedNs     int64          `json:"created_ns"`
	CreatorPID    uint32         `json:"creator_pid"`
	Head          uint64         `json:"head"`
	DataEpoch     uint32         `json:"data_epoch"`
	DataWaiters   uint32         `json:"data_waiters"`
	ClaimSeq      uint64         `json:"claim_seq"`
	ClaimDropped  uint64         `json:"claim_dropped"`
	SpaceEpoch    uint32         `json:"space_epoch"`
	SpaceWaiters  uint32         `json:"space_waiters"`
	Dropped       uint64         `json:"dropped"`
	Abandoned     uint64         `json:"abandoned"`
	ReadersGen    uint32         `json:"readers_gen"`
	Reaped        uint32         `json:"reaped"`
	OwnerPID      uint32         `json:"owner_pid"`
	Recoveries    uint32         `json:"recoveries"`
	Mutex         *jsonMutex     `json:"mutex"` // null unless mutex_abi is 0x0101 or 0x0102
	Readers       []jsonReader   `json:"readers"`
	Writers       []jsonWriter   `json:"writers"`
	MaxGroups     uint64         `json:"max_groups"`
	GroupsOffset  uint64         `json:"groups_offset"`
	Groups        []jsonGroup    `json:"groups"`
	RingHead      uint64         `json:"ring_head"` // head as loaded just before the ring was read
	Oldest        uint64         `json:"oldest"`
	NeverWritten  int            `json:"never_written"`
	Slots         []jsonSlot     `json:"slots"`
	Messages      []jsonMessage  `json:"messages"`
	Model         *jsonModel     `json:"reader_at_oldest,omitempty"`
	ModelError    map[string]any `json:"reader_at_oldest_error,omitempty"`
}

func textOf(b []byte) *string {
	if !utf8.Valid(b) {
		return nil
	}
	s := string(b)
	return &s
}

func valuesOf(g specreader.StreamGeometry, b []byte) json.RawMessage {
	if !g.IsFrames() {
		return nil
	}
	return specreader.AppendValuesJSON(nil, g.DType, b)
}

func message(g specreader.StreamGeometry, m specreader.Message) jsonMessage {
	return jsonMessage{Seq: m.Seq, Length: m.Length, TimestampNs: m.TimestampNs, WriterPID: m.WriterPID,
		Payload: hex.EncodeToString(m.Payload), Text: textOf(m.Payload), Values: valuesOf(g, m.Payload)}
}

// streamJSON dumps a stream: readers and writers that were ever used (state or
// generation non-zero), every written slot, and the committed ones as
// messages, all in sequence order.
func streamJSON(s *specreader.Stream, oldest bool) ([]byte, error) {
	g := s.Geometry()
	id := s.Identity()
	c, err := s.Counters()
	if err != nil {
		return nil, err
	}
	out := jsonStream{
		Kind: "stream", Path: s.Path(), LayoutVersion: 2,
		Backpressure: g.Backpressure.String(), Capacity: g.Capacity, MaxBytes: g.MaxBytes,
		MaxReaders: g.MaxReaders, MaxWriters: g.MaxWriters, DType: g.DTypeName(), Shape: g.Shape,
		SlotSize: g.SlotSize, ReadersOffset: g.ReadersOffset, WritersOffset: g.WritersOffset,
		SlotsOffset: g.SlotsOffset, TotalSize: g.TotalSize,
		MutexSize: id.MutexSize, MutexABI: id.MutexABI, CreationID: hex.EncodeToString(id.CreationID[:]),
		CreatedNs: id.CreatedNs, CreatorPID: id.CreatorPID,
		Head: c.Head, DataEpoch: c.DataEpoch, DataWaiters: c.DataWaiters, ClaimSeq: c.ClaimSeq,
		ClaimDropped: c.ClaimDropped, SpaceEpoch: c.SpaceEpoch, SpaceWaiters: c.SpaceWaiters,
		Dropped: c.Dropped, Abandoned: c.Abandoned, ReadersGen: c.ReadersGen, Reaped: c.Reaped,
		OwnerPID: c.OwnerPID, Recoveries: c.Recoveries,
		Readers: []jsonReader{}, Writers: []jsonWriter{}, Slots: []jsonSlot{}, Messages: []jsonMessage{},
		MaxGroups: g.MaxGroups, GroupsOffset: g.GroupsOffset, Groups: []jsonGroup{},
	}
	if out.Shape == nil {
		out.Shape = []uint64{}
	}
	if ev := s.Mutex(); ev.Meaningful {
		out.Mutex = &jsonMutex{Word: ev.Word, TID: ev.TID, OwnerDied: ev.OwnerDied, Waiters: ev.Waiters}
	}
	readers, err := s.Readers()
	if err != nil {
		return nil, err
	}
	for _, e := range readers {
		if e.Used() {
			jr := jsonReader{Index: e.Index, State: e.State, Generation: e.Generation,
				Attached: e.Attached, Alive: e.Alive, Cursor: e.Cursor, Lost: e.Lost, Received: e.Received,
				Start: e.Start, Skipped: e.Skipped, Group: e.Group, Hold: e.Hold, Sleeping: e.Sleeping, PID: e.PID,
				AttachedNs: e.AttachedNs}
			if e.Attached && !e.IsMember() {
				gap := e.CountGap()
				jr.CountGap = &gap
			}
			out.Readers = append(out.Readers, jr)
		}
	}
	groups, err := s.Groups()
	if err != nil {
		return nil, err
	}
	for _, e := range groups {
		if e.Active {
			out.Groups = append(out.Groups, jsonGroup{Index: e.Index, Name: e.Name, Generation: e.Generation,
				CreatedNs: e.CreatedNs, Start: e.Start, Cursor: e.Cursor, Received: e.Received, Lost: e.Lost,
				Skipped: e.Skipped, Members: e.Members, AliveMembers: e.AliveMembers, CountGap: e.CountGap()})
		}
	}
	writers, err := s.Writers()
	if err != nil {
		return nil, err
	}
	for _, e := range writers {
		if e.Used() {
			out.Writers = append(out.Writers, jsonWriter{Index: e.Index, State: e.State, Generation: e.Generation,
				Attached: e.Attached, Alive: e.Alive, Sent: e.Sent, Sleeping: e.Sleeping, PID: e.PID,
				AttachedNs: e.AttachedNs})
		}
	}
	ring, err := s.Scan()
	if err != nil {
		return nil, err
	}
	out.RingHead, out.Oldest, out.NeverWritten = ring.Head, ring.Oldest, ring.NeverWritten
	for _, v := range ring.Slots {
		js := jsonSlot{Slot: v.Slot, Status: string(v.Status), Seq: v.Seq, Word: v.Word,
			BeyondHead: v.Seq >= ring.Head, WriterIndex: v.WriterIndex, WriterState: v.WriterState,
			Discarded: v.Discarded}
		switch v.Status {
		case specreader.SlotCommitted:
			length, ts, pid := v.Length, v.TimestampNs, v.WriterPID
			js.Length, js.TimestampNs, js.WriterPID = &length, &ts, &pid
			js.CorruptLength = v.CorruptLength
			if !v.CorruptLength {
				p := hex.EncodeToString(v.Payload)
				js.Payload, js.Text, js.Values = &p, textOf(v.Payload), valuesOf(g, v.Payload)
				out.Messages = append(out.Messages, message(g, specreader.Message{Seq: v.Seq, Length: v.Length,
					TimestampNs: v.TimestampNs, WriterPID: v.WriterPID, Payload: v.Payload}))
			}
		case specreader.SlotWriting:
			alive := v.WriterAlive
			js.WriterAlive = &alive
		}
		out.Slots = append(out.Slots, js)
	}
	if oldest {
		m, err := s.SimulateOldestReader()
		if err != nil {
			out.ModelError = map[string]any{"error": string(specreader.KindOf(err)), "detail": err.Error()}
		} else {
			jm := &jsonModel{Recovered: m.Recovered, Entry: m.Entry, Head: m.Head, Cursor0: m.Cursor0,
				Cursor: m.Cursor, Received: m.Received, Lost: m.Lost, StoppedAt: m.StoppedAt,
				Messages: []jsonMessage{}, Abandoned: m.Counters.Abandoned, Dropped: m.Counters.Dropped}
			if m.RecvErr != nil {
				e := m.RecvErr.Error()
				jm.Error = &e
			}
			for _, msg := range m.Messages {
				jm.Messages = append(jm.Messages, message(g, msg))
			}
			out.Model = jm
		}
	}
	return json.Marshal(out)
}
