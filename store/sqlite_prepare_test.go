package store

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// TestCommitPreparesBesideATransaction: a commit whose statement size is
// not prepared yet waits for the writer's connection while another
// transaction holds it; that transaction must still get its own cached
// statements (txStmt) meanwhile, and the commit go through once it ends.
// Preparing under the statement cache's lock deadlocked the two until the
// commit's deadline.
func TestCommitPreparesBesideATransaction(t *testing.T) {
	s, err := OpenSQLite(t.Context(), filepath.Join(t.TempDir(), SQLiteFile), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tx, err := s.w.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var b EventBatch
	for i := range 5 { // 5 rows: a statement size nothing prepared yet
		b.Add = append(b.Add, EventRecord{Tenant: proto.GuildID(uint64(i + 1)), Event: proto.Event{Name: "Ping"}, AcceptedAt: now, DeliverAt: now})
	}
	committed := make(chan error, 1)
	go func() {
		_, err := s.CommitEvents(t.Context(), b)
		committed <- err
	}()
	time.Sleep(50 * time.Millisecond) // the commit waits for the connection
	got := make(chan error, 1)
	go func() {
		_, err := s.txStmt(t.Context(), tx, qEventFailed)
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Error("a transaction's statement waited for a commit that waits for the transaction")
		_ = tx.Rollback()
		<-committed
		return
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-committed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the commit did not go through after the transaction ended")
	}
}
