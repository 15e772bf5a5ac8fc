# r2_add_library(NAME DIR [DEPS ...]): one static library per source folder, from the folder's *.cc
# files (globbed, so adding a file needs no edit here). A folder without sources yet gives an
# INTERFACE library, so dependents link the same way before and after it has code.
function(r2_add_library name dir)
  file(GLOB _srcs CONFIGURE_DEPENDS ${dir}/*.cc)
  if(_srcs)
    add_library(${name} STATIC ${_srcs})
    target_link_libraries(${name} PUBLIC ${ARGN})
  else()
    add_library(${name} INTERFACE)
    target_link_libraries(${name} INTERFACE ${ARGN})
  endif()
endfunction()
