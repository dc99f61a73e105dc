// Target `layerindex`: `LayerIndex(decoding:)`, the layer index file (`layers/<diff_id>.idx`,
// Layers/LayerIndex+Codec.swift). Property: whatever decodes encodes to bytes that decode to
// the same index.
import Layers

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzLayerIndex(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let index = try? LayerIndex(decoding: bytes(data, size)) else { return 0 }
    guard let again = try? LayerIndex(decoding: index.encoded()) else { violated("an index does not decode from its own encoding") }
    guard again == index else { violated("an index changes through its codec") }
    return 0
}
