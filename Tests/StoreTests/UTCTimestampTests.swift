import Foundation
import Store
import Testing

@Suite("UTCTimestamp")
struct UTCTimestampTests {
    /// Records written before kept ISO8601DateFormatter's form; readers compare and sort them.
    @Test func matchesISO8601DateFormatter() throws {
        for _ in 0..<3 {
            let before = ISO8601DateFormatter().string(from: Date())
            let ours = UTCTimestamp.now()
            let after = ISO8601DateFormatter().string(from: Date())
            if before == after {
                #expect(ours == before)
                return
            }
        }
        Issue.record("the clock kept crossing a second boundary")
    }

    @Test func hasTheFixedShape() {
        let value = UTCTimestamp.now()
        #expect(value.count == 20)
        #expect(value.wholeMatch(of: /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z/) != nil)
    }
}
