package storetest

import (
	"testing"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

var bulkTests = []test{
	{"BulkPutTemplate", testBulkPutTemplate},
}

func testBulkPutTemplate(t *testing.T, open Opener) {
	s := open(t, store.Quota{})
	c := ctx(t)
	// Several multi-row statements, both kinds, an id above int64.
	var tenants []proto.Id
	for i := range 1_050 {
		tenants = append(tenants, proto.GuildID(uint64(i+1)<<22))
	}
	tenants = append(tenants, proto.UserID(1<<64-1))
	// One tenant already has the template, subscribed to another event:
	// the bulk put replaces it, events included.
	must(t, s.PutTemplate(c, tenants[3], proto.Template{Name: "t", Code: "return 0", Events: []string{"Old"}}))
	tpl := proto.Template{Name: "t", Code: "return 1", Events: []string{"Ping", "OnStartup"}}
	must(t, store.BulkPutTemplate(c, s, tenants, tpl))
	for _, id := range []proto.Id{tenants[0], tenants[3], tenants[1_049], tenants[1_050]} {
		got := templates(t, s, id)
		if len(got) != 1 || got[0].Code != "return 1" || len(got[0].Events) != 2 || got[0].Events[0] != "Ping" || got[0].Events[1] != "OnStartup" {
			t.Fatalf("%s: templates %+v", id, got)
		}
	}
	for event, want := range map[string]int{"Ping": len(tenants), "OnStartup": len(tenants), "Old": 0} {
		ids, err := s.TenantsWithEvent(c, event)
		if err != nil || len(ids) != want {
			t.Fatalf("TenantsWithEvent(%q): %d tenants, %v; want %d", event, len(ids), err, want)
		}
	}
	// The same validation as PutTemplate.
	if err := store.BulkPutTemplate(c, s, tenants[:1], proto.Template{Name: "", Code: "x"}); proto.CodeOf(err) == "" || err == nil {
		t.Fatalf("bad name accepted: %v", err)
	}
}
