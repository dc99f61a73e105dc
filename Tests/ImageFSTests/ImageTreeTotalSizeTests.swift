import ImageFS
import Layers
import Testing

/// A tree read from disk may hold any sizes: the total stops at Int64.max instead of trapping.
@Suite("ImageTree.totalSize")
struct ImageTreeTotalSizeTests {
    private func tree(_ entries: [LayerEntry]) throws(LayerError) -> ImageTree {
        try ImageTree.build(layers: [(name: "layer0", index: LayerIndex(entries: entries))])
    }

    @Test func saturatesAtInt64Max() throws {
        #expect(try tree([e("a", size: .max), e("b", size: .max), e("c", size: 1)]).totalSize == .max)
        #expect(try tree([e("a", size: .max - 1), e("b", size: 1)]).totalSize == .max)
        #expect(try tree([e("a", size: .max - 2), e("b", size: 1)]).totalSize == .max - 1)
    }

    @Test func negativeSizesCountAsNone() throws {
        #expect(try tree([e("a", size: 5), e("b", size: -3), e("c", size: .min)]).totalSize == 5)
    }
}
