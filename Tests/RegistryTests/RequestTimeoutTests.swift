@testable import Registry
import Testing

@Suite("RequestTimeout")
struct RequestTimeoutTests {
    @Test("durations", arguments: [
        ("2s", 2_000_000_000), ("30", 30_000_000_000), ("500ms", 500_000_000), ("2m", 120_000_000_000),
        ("1h", 3_600_000_000_000), ("1.5s", 1_500_000_000),
    ] as [(String, Int64)])
    func parses(text: String, nanos: Int64) throws {
        #expect(try RequestTimeout.parse(text).nanoseconds == nanos)
    }

    @Test("not durations", arguments: ["", "s", "0", "0s", "-1s", "abc", "2x", "nan", "inf", "1e300h"])
    func refuses(text: String) {
        #expect(throws: RegistryError.self) { try RequestTimeout.parse(text) }
    }

    @Test func describes() {
        #expect(RequestTimeout.describe(.seconds(2)) == "2s")
        #expect(RequestTimeout.describe(.milliseconds(1500)) == "1.5s")
        #expect(RequestTimeout.describe(.milliseconds(250)) == "250ms")
    }
}
