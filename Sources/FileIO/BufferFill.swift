extension UnsafeMutableRawBufferPointer {
    /// Copies what fits of `source` into this buffer after its first `filled` bytes, and
    /// advances both: the step of a writer that batches small appends into large writes.
    /// True once the buffer is full.
    public func fill(_ filled: inout Int, from source: inout UnsafeRawBufferPointer) -> Bool {
        let n = Swift.min(source.count, count - filled)
        if let base = baseAddress, let from = source.baseAddress {
            (base + filled).copyMemory(from: from, byteCount: n)
        }
        filled += n
        source = UnsafeRawBufferPointer(rebasing: source[n...])
        return filled == count
    }
}
