// Durable file operations for checkpoints and run records: atomic replace (temp + fsync +
// rename + fsync of the folder), fsync of files and folders, and SHA-256 of a file.
// Errors throw moe::Error naming the path and the failing call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace moe {

// Creates or truncates `path`, writes all of `data`, fsyncs and closes it, every call checked
// (a short write on a full disk is an error); on failure the partial file is removed.
void write_file_durably(const std::string& path, const void* data, size_t size);

// A byte range to write at a file offset.
struct FileRegion {
    int64_t offset;
    const void* data;
    size_t size;
};

// Writes `regions` into the existing file `path` (after reserving its current size with
// posix_fallocate, so a full disk fails here with ENOSPC rather than mid-way), then fsyncs it.
void write_regions_durably(const std::string& path, const std::vector<FileRegion>& regions);

// Writes `content` to `path` through a temporary file, fsync and rename (then fsyncs the folder).
void write_file_atomically(const std::string& path, const std::string& content);

void fsync_file(const std::string& path);
void fsync_directory(const std::string& path);

// Renames `from` to `to` (same filesystem) and fsyncs the parent folder of `to`.
void rename_durably(const std::string& from, const std::string& to);

// Lower-case hex SHA-256 of a file's bytes (OpenSSL EVP).
std::string sha256_file(const std::string& path);
std::string sha256_bytes(const void* data, size_t size);
// SHA-256 that `path` will have once `regions` are written into it: the regions are hashed from
// memory, the bytes between them read from the file. Lets a writer hash while it writes.
std::string sha256_file_as_written(const std::string& path, std::vector<FileRegion> regions);

// Whole file as a string; throws naming the path when it cannot be read.
std::string read_file(const std::string& path);

}  // namespace moe
