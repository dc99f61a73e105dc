import TestSupport
import Layers
import Testing

@Suite("LayerIndex codec")
struct LayerIndexCodecTests {
    static let sample = LayerIndex(entries: [
        LayerEntry(path: "", kind: .directory, mode: 0o755),
        LayerEntry(path: "usr/bin/sudo", kind: .regular, mode: 0o4755, uid: 1, gid: 2,
                   mtimeSeconds: 1_700_000_000, mtimeNanoseconds: 999_999_999, size: 123_456, dataOffset: 1536,
                   xattrs: [Xattr(name: "security.capability", value: [0, 1, 2, 0xff, 0]), Xattr(name: "user.x", value: [])]),
        LayerEntry(path: "ünï/日本語 file", kind: .regular, size: 0, dataOffset: Int64.max),
        LayerEntry(path: "lib", kind: .symlink, mode: 0o777, mtimeSeconds: -5, size: 7, linkTarget: "usr/lib"),
        LayerEntry(path: "hl", kind: .hardlink, linkTarget: "usr/bin/sudo"),
        LayerEntry(path: "dev/null", kind: .charDevice, mode: 0o666, deviceMajor: 1, deviceMinor: 3),
        LayerEntry(path: "dev/sda", kind: .blockDevice, mode: 0o660, deviceMajor: 8, deviceMinor: UInt32.max),
        LayerEntry(path: "run/fifo", kind: .fifo),
        LayerEntry(path: "run/sock", kind: .socket, uid: UInt32.max, gid: UInt32.max),
        LayerEntry(path: "etc/gone", kind: .whiteout),
        LayerEntry(path: "var", kind: .opaque),
    ])

    @Test func roundTrip() throws {
        let decoded = try LayerIndex(decoding: Self.sample.encoded())
        #expect(decoded == Self.sample)
        #expect(decoded.entries[1].xattrs == [Xattr(name: "security.capability", value: [0, 1, 2, 0xff, 0]), Xattr(name: "user.x", value: [])])
        #expect(decoded.entries[2].path == "ünï/日本語 file")
    }

    @Test func emptyIndexRoundTrips() throws {
        let empty = LayerIndex(entries: [])
        #expect(try LayerIndex(decoding: empty.encoded()) == empty)
        #expect(empty.encoded().count == "IMGVOL-LAYER-INDEX-1\n".utf8.count + 8 + 8)  // count and seal
    }

    private func reason(_ bytes: [UInt8]) -> String? {
        do {
            _ = try LayerIndex(decoding: bytes)
            return nil
        } catch {
            return error.reason
        }
    }

    @Test func version1IndexesStillRead() throws {
        // Written before files were stored apart: no flags byte.
        let v2 = Self.v2(LayerIndex(entries: [LayerEntry(path: "a", kind: .regular, size: 3, dataOffset: 512)]))
        let magic = "IMGVOL-LAYER-INDEX-2\n".utf8.count
        var v1 = Array("IMGVOL-LAYER-INDEX-1\n".utf8) + v2.dropFirst(magic)
        // The flags byte follows the data offset, 8 bytes after the size; drop it.
        let flags = v1.count - 4 - 4 - 4 - 4 - 1
        v1.remove(at: flags)
        let decoded = try LayerIndex(decoding: v1)
        #expect(decoded.entries.map(\.path) == ["a"])
        #expect(decoded.entries[0].dataOffset == 512)
        #expect(!decoded.entries[0].storedApart)
    }

    @Test func storedApartRoundTrips() throws {
        var entry = LayerEntry(path: "big", kind: .regular, size: 1 << 20, dataOffset: 1024)
        entry.storedApart = true
        #expect(try LayerIndex(decoding: LayerIndex(entries: [entry]).encoded()).entries == [entry])
    }

    @Test func damagedInputIsAnError() {
        let good = Self.v2(LayerIndex(entries: [LayerEntry(path: "a", kind: .regular, size: 3)]))
        let magic = "IMGVOL-LAYER-INDEX-1\n".utf8.count

        #expect(reason([]) == "wrong magic")
        #expect(reason(Array("IMGVOL-LAYER-INDEX-9\n".utf8) + good.dropFirst(magic)) == "wrong magic")
        #expect(reason(Array(good.dropLast())) == "truncated")
        #expect(reason(Array(good.prefix(magic + 3))) == "truncated")
        #expect(reason(good + [0]) == "trailing bytes")

        var badKind = good
        badKind[magic + 8 + 4 + 1] = 200  // count, path length, "a", then the kind byte
        #expect(reason(badKind) == "unknown entry kind")

        var absurd = good
        for i in 0..<8 { absurd[magic + i] = 0xff }
        #expect(reason(absurd)?.hasSuffix("does not fit the file") == true)

        var moreThanThere = good
        moreThanThere[magic] = 2
        #expect(reason(moreThanThere) == "entry count 2 does not fit the file")

        var hugeString = good
        for i in 0..<4 { hugeString[magic + 8 + i] = 0xff }
        #expect(reason(hugeString) == "truncated")
    }

    /// What an older imgvol wrote: version 2, without the seal.
    static func v2(_ index: LayerIndex) -> [UInt8] {
        Array("IMGVOL-LAYER-INDEX-2\n".utf8) + index.encoded().dropFirst("IMGVOL-LAYER-INDEX-3\n".utf8.count).dropLast(8)
    }

    @Test func olderUnsealedIndexesStillRead() throws {
        #expect(try LayerIndex(decoding: Self.v2(Self.sample)) == Self.sample)
    }

    /// Every flipped bit of a sealed index is refused, even one that would still parse.
    @Test func sealRefusesEveryFlippedBit() {
        let good = Self.sample.encoded()
        for bit in stride(from: 0, to: good.count * 8, by: 7) {
            var flipped = good
            flipped[bit / 8] ^= UInt8(1 << (bit % 8))
            #expect(reason(flipped) != nil, "bit \(bit) flipped was read as valid")
        }
        var digit = good
        digit[good.count - 20] ^= 0x01
        #expect(reason(digit) == "its checksum does not match")
    }

    @Test func errorDescriptionSaysDamaged() {
        do {
            _ = try LayerIndex(decoding: [1, 2, 3])
            Issue.record("decoded garbage")
        } catch {
            #expect(error.description == "layer index is damaged: wrong magic")
        }
    }
}
