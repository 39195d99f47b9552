package worker

import (
	"math/rand/v2"
	"strings"
	"testing"

	lua "github.com/Shopify/go-lua"

	"github.com/templateworker/templateworker/proto"
)

// TestDecodeDepthMatchesTheMastersCheck: the master refuses a nowait
// event's data with proto.CheckJSONDepth exactly when the worker's decoder
// would (so that no event it accepts fails at every delivery).
func TestDecodeDepthMatchesTheMastersCheck(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	shape := func(n int) string {
		var open, close strings.Builder
		for range n {
			switch rng.IntN(3) {
			case 0:
				open.WriteString("[")
				close.WriteString("]")
			case 1:
				open.WriteString(`{"k":`)
				close.WriteString("}")
			default:
				open.WriteString(`[1,"]",`)
				close.WriteString("]")
			}
		}
		inner := []string{"1", "[]", "{}", `"}"`}[rng.IntN(4)]
		c := close.String()
		r := []byte(c)
		for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
			r[i], r[j] = r[j], r[i]
		}
		return open.String() + inner + string(r)
	}
	for range 400 {
		n := 195 + rng.IntN(10)
		js := shape(n)
		l := lua.NewState()
		decErr := pushJSON(l, []byte(js), nil)
		chkErr := proto.CheckJSONDepth([]byte(js))
		if (decErr == nil) != (chkErr == nil) {
			t.Fatalf("nesting %d: decoder %v, master's check %v, for %.80s…", n, decErr, chkErr, js)
		}
	}
}
