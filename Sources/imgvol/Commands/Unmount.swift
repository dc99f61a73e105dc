import ArgumentParser
import FileIO
import Foundation
import ImgvolCore
#if canImport(Glibc)
import Glibc
#endif

struct Unmount: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Unmount an imgvol mount (also when its server has died).")

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Detach even if busy (lazy unmount).")
    var force = false

    @Argument(help: "Mountpoint.")
    var mountpoint: String

    func run() async throws {
        let mountpoint = MountTable.absolute(self.mountpoint)
        let table = MountTable(store: try global.openStore())
        let record = table.record(for: mountpoint)
        if umount2(mountpoint, 0) != 0 {
            let error = errno
            switch error {
            case EBUSY where force:
                if umount2(mountpoint, Int32(MNT_DETACH)) != 0 { throw SystemError("umount", mountpoint) }
            case EBUSY:
                throw MountServer.Failure("\(mountpoint) is busy (a process uses it); stop it or pass --force for a lazy unmount")
            case EINVAL where !MountTable.isMountpoint(mountpoint):
                table.remove(mountpoint)
                throw MountServer.Failure("\(mountpoint) is not mounted")
            default:
                throw SystemError("umount", mountpoint, errno: error)
            }
        }
        if let record, MountTable.processAlive(record.pid) {
            kill(record.pid, SIGTERM)
            for _ in 0..<200 where MountTable.processAlive(record.pid) { try await Task.sleep(nanoseconds: 10_000_000) }
        }
        table.remove(mountpoint)
    }
}
