@testable import Registry
import Testing

@Suite("SizeLimit")
struct SizeLimitTests {
    @Test func namedBounds() {
        #expect(SizeLimit.manifest.bytes == 4 << 20)
        #expect(SizeLimit.config.bytes == 16 << 20)
        #expect(SizeLimit.tokenResponse.bytes == 1 << 20)
        #expect(SizeLimit.authChallenge.bytes == 8 << 10)
    }

    /// The message names what, from where, which bound, and what to do; the error is not a
    /// network error, so it is not retried.
    @Test func exceededNamesEverything() {
        let error = SizeLimit.manifest.exceeded("manifest v1 of r.example/app:v1", registry: "r.example", size: 5 << 20)
        #expect(error.kind == .tooLarge)
        #expect(error.limit == .manifest)
        #expect(error.message.contains("manifest v1 of r.example/app:v1"))
        #expect(error.message.contains("from r.example"))
        #expect(error.message.contains("\(5 << 20) bytes"))
        #expect(error.message.contains("4 MiB"))
        #expect(error.message.contains("check the reference"))
    }

    @Test("declared Content-Length", arguments: [
        (nil, false), ("0", false), ("4194304", false), ("4194305", true), ("garbage", false), ("", false), ("-1", false),
        ("99999999999999999999999", false),
    ] as [(String?, Bool)])
    func declared(header: String?, refused: Bool) {
        do {
            try SizeLimit.manifest.check(contentLength: header, "manifest", registry: "r")
            #expect(!refused)
        } catch {
            #expect(refused)
            #expect(error.kind == .tooLarge)
        }
    }

    @Test func boundedBytesStopsPastTheBound() {
        var collected = BoundedBytes(bound: 10)
        let chunk: [UInt8] = Array(repeating: 7, count: 4)
        #expect(chunk.withUnsafeBytes { collected.append($0) })
        #expect(chunk.withUnsafeBytes { collected.append($0) })
        #expect(!collected.overflowed)
        #expect(!chunk.withUnsafeBytes { collected.append($0) })
        #expect(collected.overflowed)
        #expect(collected.bytes.count == 10)
    }

    @Test func boundedBytesExactlyAtTheBound() {
        var collected = BoundedBytes(bound: 8)
        let chunk: [UInt8] = Array(repeating: 1, count: 8)
        #expect(chunk.withUnsafeBytes { collected.append($0) })
        #expect(!collected.overflowed)
        let empty: [UInt8] = []
        #expect(empty.withUnsafeBytes { collected.append($0) })
        #expect(!collected.overflowed)
    }

    @Test func formats() {
        #expect(SizeLimit.format(4 << 20) == "4 MiB")
        #expect(SizeLimit.format(8 << 10) == "8 KiB")
        #expect(SizeLimit.format(1000) == "1000 bytes")
    }
}
